//! Reclassification jobs: a spec that asks for every image under a prefix to be classified
//! again with the serving model (`{"classify": {"prefix": "images/2025/"}}`), the shards the
//! state machine's Map runs for it, and the summary its result carries.

use serde::{Deserialize, Serialize};

use super::job::{JobSpec, MAX_SPEC_BYTES, check_spec_size, spec_error, validate_notify};
use crate::error::PipelineError;
use crate::layout::IMAGES_PREFIX;

/// Longest prefix a reclassification may name (S3 keys are at most 1,024 bytes).
const MAX_PREFIX_BYTES: usize = 1024;

/// What a job spec asks for: a head trained on a dataset, or a prefix classified again.
#[derive(Debug, Clone, PartialEq)]
pub enum JobRequest {
    Train(JobSpec),
    Classify(ClassifySpec),
}

impl JobRequest {
    /// Parses and validates a spec of either kind: one with a `classify` field is a
    /// reclassification, any other a training job.
    pub fn parse(bytes: &[u8]) -> Result<JobRequest, PipelineError> {
        let is_classify = bytes.len() <= MAX_SPEC_BYTES
            && serde_json::from_slice::<serde_json::Value>(bytes)
                .is_ok_and(|value| value.get("classify").is_some());
        if is_classify {
            ClassifySpec::parse(bytes).map(JobRequest::Classify)
        } else {
            JobSpec::parse(bytes).map(JobRequest::Train)
        }
    }

    pub fn notify(&self) -> &[String] {
        match self {
            JobRequest::Train(spec) => &spec.notify,
            JobRequest::Classify(spec) => &spec.notify,
        }
    }

    /// The dataset a training job trains on (a reclassification has none).
    pub fn dataset(&self) -> Option<&str> {
        match self {
            JobRequest::Train(spec) => Some(&spec.dataset),
            JobRequest::Classify(_) => None,
        }
    }

    /// The prefix a reclassification classifies (a training job has none).
    pub fn prefix(&self) -> Option<&str> {
        match self {
            JobRequest::Train(_) => None,
            JobRequest::Classify(spec) => Some(&spec.classify.prefix),
        }
    }
}

/// A reclassification as the user writes it: `{"classify": {"prefix": "images/2025/"},
/// "notify": ["owner@example.com"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifySpec {
    pub classify: ClassifyTarget,
    /// Who gets the report (at most 10); empty means the stack's default recipients.
    #[serde(default)]
    pub notify: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyTarget {
    /// A key prefix in the input bucket, under `images/` (`images/` itself is every image).
    pub prefix: String,
}

impl ClassifySpec {
    pub fn parse(bytes: &[u8]) -> Result<ClassifySpec, PipelineError> {
        check_spec_size(bytes)?;
        let spec: ClassifySpec =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
                .map_err(|e| {
                    let mut reason = e.inner().to_string();
                    if reason.starts_with("unknown field `dataset`") {
                        reason = "a job either trains on a `dataset` or classifies a `classify.prefix`, not both".to_owned();
                    } else if reason.starts_with("unknown field") {
                        reason.push_str(
                            " (a reclassification job has only `classify` and `notify`)",
                        );
                    }
                    spec_error(&e.path().to_string(), reason)
                })?;
        spec.validate()?;
        Ok(spec)
    }

    fn validate(&self) -> Result<(), PipelineError> {
        validate_notify(&self.notify)?;
        let prefix = &self.classify.prefix;
        let reason = if !prefix.starts_with(IMAGES_PREFIX) {
            Some(format!(
                "{:?} is not under `{IMAGES_PREFIX}`, where the images to classify are",
                prefix.chars().take(80).collect::<String>()
            ))
        } else if prefix.len() > MAX_PREFIX_BYTES {
            Some(format!(
                "the prefix is {} bytes, at most {MAX_PREFIX_BYTES}",
                prefix.len()
            ))
        } else if prefix.chars().any(char::is_control) {
            Some("the prefix has control characters".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(PipelineError::InvalidSpec {
                field: Some("classify.prefix".to_owned()),
                reason,
            }),
            None => Ok(()),
        }
    }
}

/// The model a reclassification classifies with, pinned when the job is prepared: every
/// shard uses it even if another model is promoted while the job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PinnedModel {
    /// `imagenet`, or the job id of a trained model.
    pub model_id: String,
    /// The trained head (`models/<id>/head.json`); `None` for `imagenet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_key: Option<String>,
}

/// `checkpoints/<id>/shards/<n>.json` of a reclassification: the images one Map child
/// classifies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyShard {
    pub job_id: String,
    pub model: PinnedModel,
    pub images: Vec<ListedImage>,
}

/// One image version as listed when the job was prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListedImage {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

/// `checkpoints/<id>/predictions/<n>.json`: one shard's rows of the job's predictions CSV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardPredictions {
    pub rows: Vec<PredictionRow>,
}

/// One row of `results/<id>/predictions.csv`: an image's stored prediction — its model, top
/// label and score — or why it has none (`error`: the kind, e.g. `truncated`; `superseded`
/// for an image replaced since the job was prepared, whose own upload event classifies the
/// new version; `replaced_concurrently` when another writer replaced it meanwhile).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionRow {
    pub key: String,
    pub etag: String,
    /// The model of the stored prediction: the job's, or (a real prediction kept where the
    /// job's model failed on the image) the one before.
    pub model_id: Option<String>,
    pub label: Option<String>,
    pub score: Option<f32>,
    /// Whether the score reaches the label's confidence threshold (trained heads with
    /// thresholds only).
    pub confident: Option<bool>,
    pub error: Option<String>,
}

/// What a reclassification found, in its result document and report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationSummary {
    pub model_id: String,
    /// Images listed under the prefix.
    pub images: usize,
    pub predicted: usize,
    /// Predictions below their label's threshold (also queued under `review/`).
    pub low_confidence: usize,
    /// Images per top label, most first.
    pub labels: Vec<LabelCount>,
    /// Images without a prediction, per error kind, most first.
    pub errors: Vec<LabelCount>,
    /// Every image's row: `results/<id>/predictions.csv` in the results bucket.
    pub predictions_csv: String,
    pub duration_ms: f64,
}

/// How many images one label (or error kind) has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelCount {
    pub label: String,
    pub images: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_classify_spec_is_a_reclassification() {
        let request = JobRequest::parse(
            br#"{"classify": {"prefix": "images/2025/"}, "notify": ["o@example.com"]}"#,
        )
        .unwrap();
        let JobRequest::Classify(spec) = &request else {
            panic!("{request:?}")
        };
        assert_eq!(spec.classify.prefix, "images/2025/");
        assert_eq!(request.notify(), ["o@example.com"]);
        assert_eq!(request.dataset(), None);
        assert_eq!(request.prefix(), Some("images/2025/"));
        let training = JobRequest::parse(br#"{"dataset": "pets"}"#).unwrap();
        assert_eq!(training.dataset(), Some("pets"));
    }

    #[test]
    fn classify_errors_name_the_field() {
        let cases: [(&[u8], &str); 7] = [
            (
                br#"{"classify": {"prefix": "datasets/x/"}}"#,
                "classify.prefix",
            ),
            (
                br#"{"classify": {"prefix": "images/\u0007"}}"#,
                "classify.prefix",
            ),
            (br#"{"classify": {}}"#, "classify"),
            (br#"{"classify": {"prefix": 3}}"#, "classify.prefix"),
            (
                br#"{"classify": {"prefix": "images/", "x": 1}}"#,
                "classify.x",
            ),
            (
                br#"{"classify": {"prefix": "images/"}, "dataset": "d"}"#,
                "dataset",
            ),
            (
                br#"{"classify": {"prefix": "images/"}, "notify": ["a@b.c\r\nBcc: x@y.z"]}"#,
                "notify",
            ),
        ];
        for (bytes, field) in cases {
            match JobRequest::parse(bytes) {
                Err(PipelineError::InvalidSpec { field: Some(f), .. }) => {
                    assert_eq!(f, field, "{}", String::from_utf8_lossy(bytes))
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(bytes)),
            }
        }
        match JobRequest::parse(br#"{"classify": {"prefix": "images/"}, "dataset": "d"}"#) {
            Err(PipelineError::InvalidSpec { reason, .. }) => {
                assert!(reason.contains("not both"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
