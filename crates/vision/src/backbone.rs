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

/// SHA-256 of [`BUNDLED_MODEL`], known at compile time so a cold start does not hash 14 MB
/// (a unit test checks it).
pub const BUNDLED_MODEL_SHA256: &str =
    "1f5e99ae9d6c57a019275c0d5764a0b1d5adccfec00c46054d8af78150cbf4ed";

/// The bundled model at 224×224, translated and decluttered by tract ahead of time (NNEF), so a
/// cold start skips the ONNX parse and most of the optimiser: ~40% of the load time. A test
/// regenerates it from [`BUNDLED_MODEL`] and compares the bytes.
pub const BUNDLED_NNEF: &[u8] = include_bytes!("../../../models/mobilenetv2.nnef.tar");

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
    /// The bundled model at its training resolution, from its pre-decluttered NNEF form.
    pub fn bundled() -> Result<Self> {
        let plan = tract_nnef::nnef()
            .with_onnx()
            .model_for_read(&mut Cursor::new(BUNDLED_NNEF))
            .and_then(|mut model| {
                // The NNEF was decluttered on x86, where it changes nothing more. On arm64,
                // decluttering again moves depthwise convolutions to channels-last, for which
                // tract has NEON kernels.
                if cfg!(target_arch = "aarch64") {
                    model.declutter()?;
                }
                model.optimize()?;
                model.into_runnable()
            })
            .map_err(|e| VisionError::ModelLoad(format!("{e:#}")))?;
        let labels = BUNDLED_LABELS.lines().map(str::to_owned).collect();
        Self::from_plan(
            plan,
            DEFAULT_INPUT_SIZE,
            labels,
            BUNDLED_MODEL_SHA256.to_owned(),
        )
    }

    /// The NNEF form of an ONNX export at `input_size`, as [`BUNDLED_NNEF`] is made
    /// (deterministic bytes).
    pub fn nnef_from_onnx(onnx: &[u8], input_size: u32) -> Result<Vec<u8>> {
        let size = input_size as usize;
        tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(onnx))
            .and_then(|model| model.with_input_fact(0, f32::fact([1, 3, size, size]).into()))
            .and_then(|model| model.with_outputs_by_name(["features", "logits"]))
            .and_then(|model| model.into_typed())
            .and_then(|model| model.into_decluttered())
            .and_then(|model| {
                tract_nnef::nnef().with_onnx().write_to_tar_with_config(
                    &model,
                    Vec::new(),
                    false,
                    true,
                )
            })
            .map_err(|e| VisionError::ModelLoad(format!("{e:#}")))
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
        Preprocessor::new(input_size)?;
        let size = input_size as usize;
        let plan = tract_onnx::onnx()
            .model_for_read(&mut Cursor::new(onnx))
            .and_then(|model| model.with_input_fact(0, f32::fact([1, 3, size, size]).into()))
            .and_then(|model| model.with_outputs_by_name(["features", "logits"]))
            .and_then(|model| model.into_optimized())
            .and_then(|model| model.into_runnable())
            .map_err(|e| VisionError::ModelLoad(format!("{e:#}")))?;
        let sha256 = format!("{:x}", Sha256::digest(onnx));
        Self::from_plan(plan, input_size, labels, sha256)
    }

    fn from_plan(
        plan: Arc<TypedRunnableModel>,
        input_size: u32,
        labels: Vec<String>,
        sha256: String,
    ) -> Result<Self> {
        let preprocessor = Preprocessor::new(input_size)?;
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
            sha256,
        })
    }

    /// SHA-256 of the ONNX bytes: trained heads record it, so a head is never paired with
    /// features from a different backbone.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The compiled tract plan, for benchmarks and profiling.
    pub fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
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
    fn the_bundled_sha256_is_the_bundled_models() {
        assert_eq!(
            format!("{:x}", Sha256::digest(BUNDLED_MODEL)),
            BUNDLED_MODEL_SHA256
        );
    }

    /// The shipped NNEF is exactly what the bundled ONNX translates to. After changing the
    /// ONNX or tract, regenerate it: `LAMBDA_VISION_WRITE_NNEF=1 cargo test -p vision nnef`.
    #[test]
    fn the_bundled_nnef_is_the_bundled_onnx() {
        let nnef = Backbone::nnef_from_onnx(BUNDLED_MODEL, DEFAULT_INPUT_SIZE).unwrap();
        if std::env::var_os("LAMBDA_VISION_WRITE_NNEF").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../models/mobilenetv2.nnef.tar"
            );
            std::fs::write(path, &nnef).unwrap();
        } else {
            assert!(
                nnef == BUNDLED_NNEF,
                "models/mobilenetv2.nnef.tar is stale: LAMBDA_VISION_WRITE_NNEF=1 cargo test -p vision nnef"
            );
        }
    }

    #[test]
    fn the_nnef_and_onnx_paths_compute_the_same_network() {
        let fast = Backbone::bundled().unwrap();
        let slow = Backbone::from_bytes(BUNDLED_MODEL, DEFAULT_INPUT_SIZE).unwrap();
        assert_eq!(fast.sha256(), slow.sha256());
        let tensor: Vec<f32> = (0..3 * 224 * 224)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let a = fast.infer(tensor.clone()).unwrap();
        let b = slow.infer(tensor).unwrap();
        let max_diff = |x: &[f32], y: &[f32]| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        };
        assert_eq!(a.logits.len(), 1000);
        assert!(max_diff(&a.logits, &b.logits) < 1e-4);
        assert!(max_diff(&a.features, &b.features) < 1e-4);
    }

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
