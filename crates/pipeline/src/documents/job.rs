//! Job specs (`jobs/<id>.json`) and result documents (`results/<id>.json`).

use serde::{Deserialize, Serialize};
use vision::TrainConfig;

use super::ClassificationSummary;
use crate::clock::now_rfc3339;
use crate::error::PipelineError;
use crate::layout::validate_id;

/// Most recipients one job may notify.
pub const MAX_RECIPIENTS: usize = 10;
/// Largest job spec accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 16 * 1024;

/// A training job as the user writes it. Only `dataset` is required. The training settings
/// ([`TrainConfig`]: `penalties`, `folds`, …) sit beside the job's own fields, with
/// `TrainConfig`'s defaults: `{"dataset": "pets", "folds": 10}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobSpec {
    /// Folder under `datasets/` holding `<label>/<image>` objects.
    pub dataset: String,
    /// Who gets the report (at most 10); empty means the stack's default recipients.
    pub notify: Vec<String>,
    /// Side of the square the backbone sees: a multiple of 32 from 96 to 512.
    pub input_size: u32,
    /// Whether the job's model may replace the serving one.
    pub promote: PromotePolicy,
    #[serde(flatten)]
    training: TrainConfig,
}

/// The job's own fields; every other field of a spec is a training setting.
#[derive(Deserialize)]
struct JobFields {
    dataset: String,
    #[serde(default)]
    notify: Vec<String>,
    #[serde(default = "default_input_size")]
    input_size: u32,
    #[serde(default)]
    promote: PromotePolicy,
}

const JOB_FIELDS: [&str; 4] = ["dataset", "notify", "input_size", "promote"];

/// The spec's `promote`: when a job's model (the challenger) replaces the serving one (the
/// champion).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotePolicy {
    /// When its macro-F1 on the job's held-out images is at least the champion's on the same
    /// images (the default). Models that cannot be compared (different labels, backbone or
    /// input size, nothing held out) are not promoted.
    #[default]
    IfBetter,
    /// Whatever the scores.
    Always,
    /// Never by the job: the model is kept as a version (`lambda-vision models promote`).
    Never,
}

fn default_input_size() -> u32 {
    vision::DEFAULT_INPUT_SIZE
}

/// Fields of earlier versions, trained by gradient descent for epochs. A spec that still has one
/// fails with a message saying what replaced it rather than "unknown field".
const REMOVED_FIELDS: [&str; 5] = [
    "epochs",
    "learning_rate",
    "batch_size",
    "weight_decay",
    "patience",
];

impl JobSpec {
    /// Parses and validates a spec; the error names the offending field.
    pub fn parse(bytes: &[u8]) -> Result<JobSpec, PipelineError> {
        check_spec_size(bytes)?;
        // The job's fields and the training settings are read apart, so that each part's
        // errors name their field (serde loses the path inside a flattened struct).
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(bytes).map_err(|e| spec_error(".", e.to_string()))?;
        let job_fields: serde_json::Map<_, _> = JOB_FIELDS
            .iter()
            .filter_map(|name| fields.remove_entry(*name))
            .collect();
        let job: JobFields =
            serde_path_to_error::deserialize(serde_json::Value::Object(job_fields))
                .map_err(|e| spec_error(&e.path().to_string(), e.inner().to_string()))?;
        let training: TrainConfig =
            serde_path_to_error::deserialize(serde_json::Value::Object(fields)).map_err(|e| {
                let mut reason = e.inner().to_string();
                if reason.starts_with("unknown field") {
                    reason.push_str(
                        " (or the job's `dataset`, `notify`, `input_size`, `promote`; a reclassification has `classify`)",
                    );
                }
                spec_error(&e.path().to_string(), reason)
            })?;
        let spec = JobSpec {
            dataset: job.dataset,
            notify: job.notify,
            input_size: job.input_size,
            promote: job.promote,
            training,
        };
        spec.validate()?;
        Ok(spec)
    }

    pub fn validate(&self) -> Result<(), PipelineError> {
        let invalid = |field: &str, reason: String| PipelineError::InvalidSpec {
            field: Some(field.to_owned()),
            reason,
        };
        validate_id("dataset name", &self.dataset)
            .map_err(|e| invalid("dataset", e.to_string()))?;
        validate_notify(&self.notify)?;
        if !(96..=512).contains(&self.input_size) || !self.input_size.is_multiple_of(32) {
            return Err(invalid(
                "input_size",
                format!("{} is not a multiple of 32 from 96 to 512", self.input_size),
            ));
        }
        self.training.validate().map_err(|e| match e {
            vision::VisionError::InvalidConfig { field, reason } => invalid(field, reason),
            other => invalid("spec", other.to_string()),
        })
    }

    pub fn train_config(&self) -> TrainConfig {
        self.training.clone()
    }
}

/// Refuses a spec over [`MAX_SPEC_BYTES`] before it is parsed, whatever kind it is.
pub(super) fn check_spec_size(bytes: &[u8]) -> Result<(), PipelineError> {
    if bytes.len() > MAX_SPEC_BYTES {
        return Err(PipelineError::InvalidSpec {
            field: None,
            reason: format!(
                "the spec is {} bytes, more than the {MAX_SPEC_BYTES} allowed",
                bytes.len()
            ),
        });
    }
    Ok(())
}

/// At most [`MAX_RECIPIENTS`] plausible addresses, or an error naming `notify`.
pub(super) fn validate_notify(notify: &[String]) -> Result<(), PipelineError> {
    let invalid = |reason: String| PipelineError::InvalidSpec {
        field: Some("notify".to_owned()),
        reason,
    };
    if notify.len() > MAX_RECIPIENTS {
        return Err(invalid(format!(
            "{} recipients, at most {MAX_RECIPIENTS} allowed",
            notify.len()
        )));
    }
    match notify.iter().find(|a| !is_plausible_address(a)) {
        Some(address) => Err(invalid(format!(
            "{:?} is not an email address",
            truncate(address)
        ))),
        None => Ok(()),
    }
}

/// The `notify` list of a spec that may not parse as a whole: the plausible addresses of it,
/// at most [`MAX_RECIPIENTS`], so the owner still hears why the job did not run.
pub fn salvage_notify(spec_bytes: &[u8]) -> Vec<String> {
    serde_json::from_slice::<serde_json::Value>(spec_bytes)
        .ok()
        .and_then(|v| v.get("notify").cloned())
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .map(|list| {
            list.into_iter()
                .filter(|a| is_plausible_address(a))
                .take(MAX_RECIPIENTS)
                .collect()
        })
        .unwrap_or_default()
}

/// `local@domain` with no whitespace, no control characters and nothing that could break out
/// of an email header (`,`, `;`, `<`, `>`, quotes).
pub fn is_plausible_address(address: &str) -> bool {
    let Some((local, domain)) = address.split_once('@') else {
        return false;
    };
    address.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && address.chars().all(|c| {
            c.is_ascii_graphic()
                && !matches!(
                    c,
                    ',' | ';' | '<' | '>' | '"' | '\'' | '(' | ')' | '[' | ']' | '\\'
                )
        })
}

fn truncate(text: &str) -> String {
    text.chars().take(80).collect()
}

/// The error for `reason` at `path` (`.` for the whole spec), naming the field where it can be
/// found and saying what replaced a removed one.
pub(super) fn spec_error(path: &str, mut reason: String) -> PipelineError {
    let field = if path == "." {
        field_of(&reason)
    } else {
        Some(path.to_owned())
    };
    if let Some(removed) = field.as_deref().filter(|f| REMOVED_FIELDS.contains(f)) {
        reason = format!(
            "`{removed}` is no longer used: the head is now solved to convergence (L-BFGS) and its L2 penalty chosen by cross-validation, so there are no epochs or learning rate to set; remove the field (to steer regularisation, set `penalties`)"
        );
    }
    PipelineError::InvalidSpec { field, reason }
}

/// serde_json names unknown fields and bad values in its message: "unknown field `x`" or
/// "invalid type: … at line 1 column 20"; pull the field out where it can be found.
fn field_of(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}

/// The outcome of a job, written to `results/<job-id>.json`; its creation triggers the email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub job_id: String,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// What a reclassification classified (`classify.prefix`), instead of a dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Recipients, copied from the spec so the notifier never reads user objects.
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<TrainingSummary>,
    /// What a reclassification job found (training jobs have `summary` instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<ClassificationSummary>,
    /// Champion vs challenger: whether the job's model was promoted, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    /// How many times the trainer handed the job on to a fresh invocation.
    #[serde(default)]
    pub continuations: u32,
    pub finished_at: String,
}

/// The promotion decision of a successful job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    pub policy: PromotePolicy,
    pub promoted: bool,
    /// The decision in one sentence.
    pub reason: String,
    /// The job's model on its held-out images.
    pub challenger: ModelScore,
    /// The model serving when the job finished, on the same images (absent when none served
    /// or the two cannot be compared; `reason` says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<ModelScore>,
    /// Held-out images both were scored on.
    pub compared_on: usize,
    /// The model serving after the decision; `imagenet` when none.
    pub serving: String,
}

/// A model's scores on a set of held-out images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelScore {
    pub model_id: String,
    pub accuracy: f64,
    pub macro_f1: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `models/<job-id>/` in the results bucket.
    pub prefix: String,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub labels: Vec<String>,
    pub validation_accuracy: f64,
    pub macro_f1: f64,
    pub images_train: usize,
    pub images_validation: usize,
    pub images_skipped: usize,
    /// The L2 penalty cross-validation chose, and its cross-validated accuracy on the
    /// training split (beside `validation_accuracy`, on images no fit saw).
    pub penalty: f64,
    pub cv_accuracy: f64,
    pub duration_ms: f64,
}

impl JobResult {
    /// A failed result explaining `error`.
    pub fn failed(
        job_id: &str,
        dataset: Option<String>,
        notify: Vec<String>,
        error: &PipelineError,
        continuations: u32,
    ) -> Self {
        let error = ErrorInfo {
            kind: error.kind().to_owned(),
            message: error.to_string(),
        };
        JobResult::failed_with(job_id, dataset, notify, error, continuations)
    }

    /// A failed result with `error` as given (e.g. what Lambda reported of an invocation).
    pub fn failed_with(
        job_id: &str,
        dataset: Option<String>,
        notify: Vec<String>,
        error: ErrorInfo,
        continuations: u32,
    ) -> Self {
        JobResult {
            job_id: job_id.to_owned(),
            status: JobStatus::Failed,
            dataset,
            prefix: None,
            notify,
            error: Some(error),
            model: None,
            summary: None,
            classification: None,
            promotion: None,
            continuations,
            finished_at: now_rfc3339(),
        }
    }

    /// The failed result of a spec that did not parse: its `notify` list is still used where
    /// one can be read (plausible addresses only, at most [`MAX_RECIPIENTS`]), so the owner
    /// hears why the job never ran.
    pub fn rejected_spec(job_id: &str, spec_bytes: &[u8], error: &PipelineError) -> Self {
        JobResult::failed(job_id, None, salvage_notify(spec_bytes), error, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dataset_is_required() {
        let spec = JobSpec::parse(br#"{"dataset":"flowers"}"#).unwrap();
        assert_eq!(spec.train_config(), TrainConfig::default());
        assert_eq!(spec.input_size, 224);
        assert!(spec.notify.is_empty());
        assert_eq!(spec.promote, PromotePolicy::IfBetter);
        assert_eq!(spec.train_config().min_confidence, None);
    }

    #[test]
    fn every_field_parses() {
        let spec = JobSpec::parse(
            br#"{ "dataset": "flowers", "notify": ["owner@example.com"],
                  "penalties": [0.001, 0.1], "folds": 4, "max_iterations": 300,
                  "validation_split": 0.2, "refit_with_validation": false, "seed": 42,
                  "input_size": 224, "min_images_per_class": 5, "promote": "never",
                  "min_confidence": 0.8 }"#,
        )
        .unwrap();
        assert_eq!(spec.notify, ["owner@example.com"]);
        assert_eq!(spec.promote, PromotePolicy::Never);
        assert_eq!(spec.train_config().min_confidence, Some(0.8));
        let config = spec.train_config();
        assert_eq!(config.penalties, [0.001, 0.1]);
        assert_eq!((config.folds, config.max_iterations), (4, 300));
        assert!(!config.refit_with_validation);
    }

    /// The design brief's example spec (gradient-descent knobs) fails, naming the first
    /// removed field and what replaced it.
    #[test]
    fn removed_fields_say_what_replaced_them() {
        for field in REMOVED_FIELDS {
            let spec = format!(r#"{{"dataset":"flowers","{field}":1}}"#);
            match JobSpec::parse(spec.as_bytes()) {
                Err(PipelineError::InvalidSpec {
                    field: Some(f),
                    reason,
                }) => {
                    assert_eq!(f, field);
                    assert!(reason.contains("no longer used"), "{reason}");
                    assert!(reason.contains("`penalties`"), "{reason}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases: [(&[u8], &str); 13] = [
            (br#"{"dataset":"f","promote":"sometimes"}"#, "promote"),
            (br#"{"dataset":"f","min_confidence":1.5}"#, "min_confidence"),
            (
                br#"{"dataset":"f","min_confidence":"high"}"#,
                "min_confidence",
            ),
            (br#"{"dataset":"f","epoch":3}"#, "epoch"),
            (br#"{"dataset":"f","epochs":0}"#, "epochs"),
            (br#"{"dataset":"f","folds":1}"#, "folds"),
            (br#"{"dataset":"f","folds":"ten"}"#, "folds"),
            (br#"{"dataset":"f","penalties":[0.1,-1]}"#, "penalties"),
            (br#"{"dataset":"f","input_size":225}"#, "input_size"),
            (br#"{"dataset":"../etc"}"#, "dataset"),
            (
                br#"{"dataset":"f","notify":["a@b.c\r\nBcc: x@y.z"]}"#,
                "notify",
            ),
            (
                br#"{"dataset":"f","validation_split":0.9}"#,
                "validation_split",
            ),
            (br#"{"notify":[]}"#, "dataset"),
        ];
        for (bytes, field) in cases {
            match JobSpec::parse(bytes) {
                Err(PipelineError::InvalidSpec { field: Some(f), .. }) => {
                    assert_eq!(f, field, "{}", String::from_utf8_lossy(bytes))
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(bytes)),
            }
        }
        let many: Vec<String> = (0..11).map(|i| format!("u{i}@example.com")).collect();
        let spec = serde_json::json!({"dataset": "f", "notify": many}).to_string();
        assert!(JobSpec::parse(spec.as_bytes()).is_err());
        assert!(matches!(
            JobSpec::parse(b"not json"),
            Err(PipelineError::InvalidSpec { field: None, .. })
        ));
    }
}
