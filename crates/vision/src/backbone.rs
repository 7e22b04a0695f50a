//! The frozen MobileNetV2 backbone, compiled by tract once per process and reused per image.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::prelude::*;

use crate::decode::{DecodeLimits, ImageFormat, decode};
use crate::error::{Result, VisionError};
use crate::preprocess::Preprocessor;

/// The bundled ImageNet MobileNetV2 (see `models/PROVENANCE.md`), compiled into the binary so a
/// Lambda needs no model download and no file system access at cold start.
pub const BUNDLED_MODEL: &[u8] = include_bytes!("../../../models/mobilenetv2.onnx");

/// The 1000 ImageNet class names in the bundled model's output order.
pub const BUNDLED_LABELS: &str = include_str!("../../../models/imagenet_labels.txt");

/// The input size the bundled model was trained at.
pub const DEFAULT_INPUT_SIZE: u32 = 224;

/// Length of the feature vector the head is trained on.
pub const FEATURE_LEN: usize = 1280;

/// One forward pass: the pooled features (for a trained head) and the ImageNet logits.
#[derive(Debug, Clone)]
pub struct Inference {
    pub features: Vec<f32>,
    pub logits: Vec<f32>,
}

/// One of the top-k classes, as written in predictions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub label: String,
    pub index: usize,
    pub score: f32,
}

/// Where the time went for one image, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub decode_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
}

/// A classified image: the top classes and the image's displayed size.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub top: Vec<Prediction>,
    pub width: u32,
    pub height: u32,
    pub format: ImageFormat,
    pub timings: Timings,
}

/// MobileNetV2 with its ImageNet labels, ready to run. Load once per process (it costs tens of
/// milliseconds to optimise), then share it: inference takes `&self`.
pub struct Backbone {
    plan: Arc<TypedRunnableModel>,
    preprocessor: Preprocessor,
    labels: Vec<String>,
    sha256: String,
}

impl std::fmt::Debug for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backbone")
            .field("input_size", &self.preprocessor.input_size())
            .field("classes", &self.labels.len())
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl Backbone {
    /// The bundled model at its training resolution.
    pub fn bundled() -> Result<Self> {
        Self::from_bytes(BUNDLED_MODEL, DEFAULT_INPUT_SIZE)
    }

    /// An ONNX export with input `input` `[N,3,H,W]` and outputs `features` and `logits`,
    /// compiled for one image of `input_size × input_size`.
    pub fn from_bytes(onnx: &[u8], input_size: u32) -> Result<Self> {
        let labels = BUNDLED_LABELS.lines().map(str::to_owned).collect();
        Self::with_labels(onnx, input_size, labels)
    }

    /// Like [`Backbone::from_bytes`], reading the model from a file.
    pub fn from_path(path: &Path, input_size: u32) -> Result<Self> {
        let onnx = std::fs::read(path).map_err(|source| VisionError::ModelIo {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(&onnx, input_size)
    }

    fn with_labels(onnx: &[u8], input_size: u32, labels: Vec<String>) -> Result<Self> {
        let preprocessor = Preprocessor::new(input_size)?;
        let size = input_size as usize;
        let plan = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(onnx))
            .and_then(|model| model.with_input_fact(0, f32::fact([1, 3, size, size]).into()))
            .and_then(|model| model.with_outputs_by_name(["features", "logits"]))
            .and_then(|model| model.into_optimized())
            .and_then(|model| model.into_runnable())
            .map_err(|e| VisionError::ModelLoad(format!("{e:#}")))?;
        let classes = output_len(&plan, 1)?;
        let features = output_len(&plan, 0)?;
        if features != FEATURE_LEN {
            return Err(VisionError::ModelLoad(format!(
                "`features` has {features} values, expected {FEATURE_LEN}"
            )));
        }
        if classes != labels.len() {
            return Err(VisionError::LabelCount {
                labels: labels.len(),
                classes,
            });
        }
        Ok(Backbone {
            plan,
            preprocessor,
            labels,
            sha256: format!("{:x}", Sha256::digest(onnx)),
        })
    }

    /// SHA-256 of the ONNX bytes: trained heads record it, so a head is never paired with
    /// features from a different backbone.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// Runs the network on a tensor made by [`Preprocessor::tensor`].
    pub fn infer(&self, tensor: Vec<f32>) -> Result<Inference> {
        let size = self.preprocessor.input_size() as usize;
        let input = Tensor::from_shape(&[1, 3, size, size], &tensor)
            .map_err(|e| VisionError::Inference(format!("{e:#}")))?;
        let outputs = self
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| VisionError::Inference(format!("{e:#}")))?;
        let values = |ix: usize| -> Result<Vec<f32>> {
            let view = outputs[ix]
                .to_plain_array_view::<f32>()
                .map_err(|e| VisionError::Inference(format!("{e:#}")))?;
            Ok(view.iter().copied().collect())
        };
        Ok(Inference {
            features: values(0)?,
            logits: values(1)?,
        })
    }

    /// Preprocesses and runs one decoded image.
    pub fn infer_image(&self, image: &RgbImage) -> Result<Inference> {
        self.infer(self.preprocessor.tensor(image)?)
    }

    /// Decodes, preprocesses and runs one encoded image; every step bounded by `limits`.
    pub fn infer_bytes(&self, bytes: &[u8], limits: &DecodeLimits) -> Result<ImageInference> {
        let started = Instant::now();
        let decoded = decode(bytes, limits, self.preprocessor.resize_short_side())?;
        let decoded_at = Instant::now();
        let tensor = self.preprocessor.tensor(&decoded.pixels)?;
        let preprocessed_at = Instant::now();
        let inference = self.infer(tensor)?;
        let finished = Instant::now();
        Ok(ImageInference {
            inference,
            width: decoded.width,
            height: decoded.height,
            format: decoded.format,
            timings: Timings {
                decode_ms: millis(decoded_at - started),
                preprocess_ms: millis(preprocessed_at - decoded_at),
                inference_ms: millis(finished - preprocessed_at),
            },
        })
    }
}

/// What [`Backbone::infer_bytes`] learns about one image.
#[derive(Debug, Clone)]
pub struct ImageInference {
    pub inference: Inference,
    /// Displayed size (after EXIF orientation) at full resolution.
    pub width: u32,
    pub height: u32,
    pub format: ImageFormat,
    pub timings: Timings,
}

fn output_len(plan: &TypedRunnableModel, ix: usize) -> Result<usize> {
    let fact = plan
        .model()
        .output_fact(ix)
        .map_err(|e| VisionError::ModelLoad(format!("{e:#}")))?;
    fact.shape
        .as_concrete()
        .map(|dims| dims.iter().product())
        .ok_or_else(|| {
            VisionError::ModelLoad(format!("output {ix} has a symbolic shape {:?}", fact.shape))
        })
}

fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` most probable classes, best first; ties keep the lower index first.
pub fn top_k(logits: &[f32], labels: &[String], k: usize) -> Vec<Prediction> {
    let probabilities = softmax(logits);
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| {
        probabilities[b]
            .total_cmp(&probabilities[a])
            .then(a.cmp(&b))
    });
    order
        .into_iter()
        .take(k)
        .map(|index| Prediction {
            label: labels
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("class {index}")),
            index,
            score: probabilities[index],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_a_distribution_even_for_huge_logits() {
        let p = softmax(&[1000.0, 999.0, -1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[0] > p[1] && p[1] > p[2]);
    }

    #[test]
    fn top_k_orders_by_score_then_index() {
        let labels: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let top = top_k(&[0.5, 2.0, 2.0, -1.0], &labels, 3);
        let indices: Vec<usize> = top.iter().map(|p| p.index).collect();
        assert_eq!(indices, [1, 2, 0]);
        assert_eq!(top[0].label, "b");
        assert_eq!(top_k(&[1.0], &labels, 10).len(), 1);
    }
}
