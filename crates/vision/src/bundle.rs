//! The model bundle a training run produces — `head.json`, `metrics.json` and a standalone
//! `model.onnx` — as a directory locally and under `models/<job-id>/` in S3. Built in memory
//! so both destinations write the very same bytes.

use std::path::Path;
use std::time::Instant;

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb::{self, AttributeProto, NodeProto, TensorProto};

use crate::backbone::{Backbone, FEATURE_LEN, softmax};
use crate::confidence::{EvaluatedImage, ThresholdSource, Thresholds, choose_thresholds};
use crate::error::{Result, VisionError};
use crate::evaluation::{Evaluation, evaluate};
use crate::extract::FeatureSet;
use crate::head::{Head, PenaltyScore, TrainConfig, argmax, train_head};
use crate::metrics::{ImageCounts, Metrics, TrainingTimings};
use crate::preprocess::{IMAGENET_MEAN, IMAGENET_STD};

pub const HEAD_FILE: &str = "head.json";
pub const METRICS_FILE: &str = "metrics.json";
pub const ONNX_FILE: &str = "model.onnx";
/// One line per held-out image: key, true label, predicted label, score ([`EvaluatedImage`]).
pub const EVALUATION_FILE: &str = "evaluation.jsonl";

/// The version written into every bundle, so a bundle says which code made it.
pub const LAMBDA_VISION_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `head.json`: everything needed to turn backbone features into labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadDocument {
    pub format_version: u32,
    pub lambda_vision_version: String,
    /// The backbone the features came from; a different backbone makes the head meaningless.
    pub backbone_sha256: String,
    pub input_size: u32,
    pub normalisation: Normalisation,
    pub labels: Vec<String>,
    pub standardisation: Standardisation,
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
    /// Per-label confidence thresholds (absent in heads trained before there were any: every
    /// prediction of such a head counts as confident).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
}

/// Pixel normalisation applied before the backbone (ImageNet statistics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalisation {
    pub resize_short_side: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// Feature standardisation applied before the head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Standardisation {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl HeadDocument {
    pub fn new(head: &Head, backbone: &Backbone, thresholds: Option<Thresholds>) -> Self {
        let preprocessor = backbone.preprocessor();
        HeadDocument {
            format_version: 1,
            lambda_vision_version: LAMBDA_VISION_VERSION.to_owned(),
            backbone_sha256: backbone.sha256().to_owned(),
            input_size: preprocessor.input_size(),
            normalisation: Normalisation {
                resize_short_side: preprocessor.resize_short_side(),
                mean: IMAGENET_MEAN,
                std: IMAGENET_STD,
            },
            labels: head.labels.clone(),
            standardisation: Standardisation {
                mean: head.feature_mean.clone(),
                std: head.feature_std.clone(),
            },
            weights: head.weights.clone(),
            bias: head.bias.clone(),
            thresholds,
        }
    }

    /// The head, checked for shape and for being trained on `backbone`.
    pub fn head_for(&self, backbone: &Backbone) -> Result<Head> {
        if self.backbone_sha256 != backbone.sha256() {
            return Err(VisionError::BackboneMismatch {
                expected: self.backbone_sha256.clone(),
                actual: backbone.sha256().to_owned(),
            });
        }
        if self.input_size != backbone.preprocessor().input_size() {
            return Err(VisionError::InvalidHead(format!(
                "trained at input size {}, but the backbone runs at {}",
                self.input_size,
                backbone.preprocessor().input_size()
            )));
        }
        if let Some(thresholds) = &self.thresholds
            && thresholds.per_label.len() != self.labels.len()
        {
            return Err(VisionError::InvalidHead(format!(
                "{} thresholds for {} labels",
                thresholds.per_label.len(),
                self.labels.len()
            )));
        }
        let head = Head {
            labels: self.labels.clone(),
            feature_mean: self.standardisation.mean.clone(),
            feature_std: self.standardisation.std.clone(),
            weights: self.weights.clone(),
            bias: self.bias.clone(),
        };
        head.validate()?;
        Ok(head)
    }
}

/// A finished training run: the head, its metrics and thresholds, plus the files' bytes.
#[derive(Debug, Clone)]
pub struct TrainedBundle {
    pub head: Head,
    pub metrics: Metrics,
    pub thresholds: Thresholds,
    /// Rows of the feature set that `metrics.evaluation` scored (the validation split, or the
    /// training split when nothing was held out), so another head can be scored on the same.
    pub evaluated_rows: Vec<usize>,
    /// Each of those images as the scored head saw it (`evaluation.jsonl`).
    pub evaluated: Vec<EvaluatedImage>,
    pub head_json: Vec<u8>,
    pub metrics_json: Vec<u8>,
    pub model_onnx: Vec<u8>,
    pub evaluation_jsonl: Vec<u8>,
}

impl TrainedBundle {
    /// Writes the three files into `dir`, creating it if needed.
    pub fn write_to_dir(&self, dir: &Path) -> Result<()> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| VisionError::BundleIo { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        for (name, bytes) in [
            (HEAD_FILE, &self.head_json),
            (METRICS_FILE, &self.metrics_json),
            (ONNX_FILE, &self.model_onnx),
            (EVALUATION_FILE, &self.evaluation_jsonl),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(io(&path))?;
        }
        Ok(())
    }
}

/// Trains a head on extracted features and packages it: what both `lambda-vision train` and
/// the trainer Lambda run once the features are in hand.
pub fn train_bundle(
    backbone: &Backbone,
    backbone_onnx: &[u8],
    set: &FeatureSet,
    config: &TrainConfig,
    extraction_ms: f64,
    on_penalty: impl FnMut(&PenaltyScore),
) -> Result<TrainedBundle> {
    let started = Instant::now();
    let trained = train_head(set, config, on_penalty)?;
    let head_training_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (rows, evaluated_on) = if trained.split.validation.is_empty() {
        (&trained.split.train, "train")
    } else {
        (&trained.split.validation, "validation")
    };
    let labels = &trained.head.labels;
    let scored = score_rows(&trained.scored_head, set, rows, &trained.targets);
    let truth: Vec<usize> = scored.iter().map(|s| s.0).collect();
    let predicted: Vec<usize> = scored.iter().map(|s| s.1).collect();
    let thresholds = thresholds_for(config.min_confidence, evaluated_on, &scored, labels.len());
    let evaluated: Vec<EvaluatedImage> = rows
        .iter()
        .zip(&scored)
        .map(|(&row, &(t, p, score))| EvaluatedImage {
            key: set.keys[row].clone(),
            truth: labels[t].clone(),
            predicted: labels[p].clone(),
            score,
        })
        .collect();
    let mut evaluation_jsonl = Vec::new();
    for image in &evaluated {
        serde_json::to_writer(&mut evaluation_jsonl, image)
            .map_err(|e| VisionError::InvalidHead(e.to_string()))?;
        evaluation_jsonl.push(b'\n');
    }
    let metrics = Metrics {
        evaluation: evaluate(&truth, &predicted, labels),
        evaluated_on: evaluated_on.to_owned(),
        chosen_penalty: trained.chosen,
        penalty_search: trained.penalty_scores,
        solver: trained.solver,
        refitted_with_validation: trained.refitted_with_validation,
        images: ImageCounts {
            train: trained.split.train.len(),
            validation: trained.split.validation.len(),
            skipped: set.skipped.len(),
        },
        skipped: set.skipped.clone(),
        config: config.clone(),
        timings: TrainingTimings {
            extraction_ms,
            head_training_ms,
        },
    };
    let document = HeadDocument::new(&trained.head, backbone, Some(thresholds.clone()));
    Ok(TrainedBundle {
        head_json: to_json(&document)?,
        metrics_json: to_json(&metrics)?,
        model_onnx: export_onnx(backbone_onnx, &trained.head)?,
        evaluation_jsonl,
        evaluated,
        evaluated_rows: rows.clone(),
        head: trained.head,
        metrics,
        thresholds,
    })
}

/// Scores `head` on `rows` of `set`, as [`train_bundle`] scores a new head: how a serving
/// model (the champion) does on a new job's held-out images. `None` when the head's labels are
/// not the set's (the two models answer different questions).
pub fn score_head(head: &Head, set: &FeatureSet, rows: &[usize]) -> Option<Evaluation> {
    let mut truth = Vec::with_capacity(rows.len());
    for &row in rows {
        truth.push(head.labels.iter().position(|l| *l == set.labels[row])?);
    }
    let predicted: Vec<usize> = rows.iter().map(|&r| head.predict(set.row(r))).collect();
    Some(evaluate(&truth, &predicted, &head.labels))
}

/// (truth, predicted, score of the predicted label) of each of `rows`, scored by `head`.
fn score_rows(
    head: &Head,
    set: &FeatureSet,
    rows: &[usize],
    targets: &[usize],
) -> Vec<(usize, usize, f32)> {
    rows.iter()
        .map(|&r| {
            let probabilities = softmax(&head.logits(set.row(r)));
            let predicted = argmax(&probabilities);
            (targets[r], predicted, probabilities[predicted])
        })
        .collect()
}

/// The thresholds to ship: the job's `min_confidence` for every label, else each label's own
/// chosen on the validation split, else (nothing held out) none that filter.
fn thresholds_for(
    min_confidence: Option<f32>,
    evaluated_on: &str,
    scored: &[(usize, usize, f32)],
    classes: usize,
) -> Thresholds {
    match (min_confidence, evaluated_on) {
        (Some(minimum), _) => Thresholds {
            per_label: vec![minimum; classes],
            source: ThresholdSource::MinConfidence,
        },
        (None, "validation") => Thresholds {
            per_label: choose_thresholds(scored, classes),
            source: ThresholdSource::ValidationF1,
        },
        _ => Thresholds {
            per_label: vec![0.0; classes],
            source: ThresholdSource::NoValidation,
        },
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| VisionError::InvalidHead(e.to_string()))
}

/// A standalone classifier: the backbone graph with the ImageNet classifier removed and the
/// head (standardisation folded in) plus a softmax appended, output `probabilities` `[N, C]`.
pub fn export_onnx(backbone_onnx: &[u8], head: &Head) -> Result<Vec<u8>> {
    let invalid = |detail: &str| {
        VisionError::ModelLoad(format!("cannot extend the backbone graph: {detail}"))
    };
    let mut model = pb::ModelProto::decode(backbone_onnx).map_err(|e| invalid(&e.to_string()))?;
    let graph = model.graph.as_mut().ok_or_else(|| invalid("no graph"))?;

    // Drop the ImageNet classifier and the weights only it used (5 MB).
    if let Some(position) = graph
        .node
        .iter()
        .position(|n| n.output.iter().any(|o| o == "logits"))
    {
        let classifier = graph.node.remove(position);
        let still_used = |name: &String| graph.node.iter().any(|n| n.input.contains(name));
        let unused: Vec<String> = classifier
            .input
            .iter()
            .filter(|i| !still_used(i))
            .cloned()
            .collect();
        graph.initializer.retain(|t| !unused.contains(&t.name));
    }
    let mut output = graph
        .output
        .iter()
        .find(|o| o.name == "features")
        .cloned()
        .ok_or_else(|| invalid("no `features` output"))?;

    let classes = head.labels.len();
    let (weights, bias) = head.folded();
    graph.initializer.push(float_tensor(
        "head_weight",
        &[classes, FEATURE_LEN],
        &weights,
    ));
    graph
        .initializer
        .push(float_tensor("head_bias", &[classes], &bias));
    graph.node.push(NodeProto {
        name: "head_gemm".to_owned(),
        op_type: "Gemm".to_owned(),
        input: vec!["features".into(), "head_weight".into(), "head_bias".into()],
        output: vec!["head_logits".into()],
        attribute: vec![int_attribute("transB", 1)],
        ..NodeProto::default()
    });
    graph.node.push(NodeProto {
        name: "head_softmax".to_owned(),
        op_type: "Softmax".to_owned(),
        input: vec!["head_logits".into()],
        output: vec!["probabilities".into()],
        attribute: vec![int_attribute("axis", 1)],
        ..NodeProto::default()
    });
    output.name = "probabilities".to_owned();
    set_last_dim(&mut output, classes as i64);
    graph.output = vec![output];
    model.producer_name = "lambda-vision".to_owned();
    model.producer_version = LAMBDA_VISION_VERSION.to_owned();
    Ok(model.encode_to_vec())
}

fn float_tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..AttributeProto::default()
    }
}

fn set_last_dim(info: &mut pb::ValueInfoProto, value: i64) {
    use pb::tensor_shape_proto::dimension::Value;
    use pb::type_proto::Value as TypeValue;
    if let Some(TypeValue::TensorType(tensor)) = info.r#type.as_mut().and_then(|t| t.value.as_mut())
        && let Some(last) = tensor.shape.as_mut().and_then(|s| s.dim.last_mut())
    {
        last.value = Some(Value::DimValue(value));
    }
}

/// Reads `head.json` from a bundle directory.
pub fn read_head_document(dir: &Path) -> Result<HeadDocument> {
    let path = dir.join(HEAD_FILE);
    let bytes = std::fs::read(&path).map_err(|source| VisionError::BundleIo {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| VisionError::BundleFormat {
        path,
        detail: e.to_string(),
    })
}
