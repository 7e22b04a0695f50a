//! The S3 key layout, in one place: every key any function reads or writes is built or parsed
//! here, so the template's event filters and the code cannot drift apart unnoticed.

use crate::error::PipelineError;

/// Prefix of images to classify in the input bucket.
pub const IMAGES_PREFIX: &str = "images/";
/// Prefix of labelled datasets in the input bucket: `datasets/<dataset>/<label>/<file>`.
pub const DATASETS_PREFIX: &str = "datasets/";
/// Prefix of job specs in the input bucket: `jobs/<job-id>.json`.
pub const JOBS_PREFIX: &str = "jobs/";
/// Prefix of prediction documents in the results bucket.
pub const PREDICTIONS_PREFIX: &str = "predictions/";
pub const MODELS_PREFIX: &str = "models/";
pub const CACHE_PREFIX: &str = "cache/";
pub const CHECKPOINTS_PREFIX: &str = "checkpoints/";
/// Prefix of job outcomes in the results bucket; creating one triggers the notifier.
pub const RESULTS_PREFIX: &str = "results/";
pub const NOTIFICATIONS_PREFIX: &str = "notifications/";
pub const JSON_SUFFIX: &str = ".json";

/// What an object key in the input bucket asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKey {
    /// `images/<path>`: classify it; `path` is what follows `images/`.
    Image { path: String },
    /// `jobs/<job-id>.json`: start a training job.
    JobSpec { job_id: String },
    /// Anything else (datasets, stray files): nothing to do.
    Other,
}

impl InputKey {
    /// Classifies a (URL-decoded) key; a job spec with an unsafe id is an error, so it can be
    /// reported rather than silently ignored.
    pub fn parse(key: &str) -> Result<InputKey, PipelineError> {
        if let Some(path) = key.strip_prefix(IMAGES_PREFIX) {
            if path.is_empty() || path.ends_with('/') {
                return Ok(InputKey::Other);
            }
            return Ok(InputKey::Image {
                path: path.to_owned(),
            });
        }
        if let Some(name) = key.strip_prefix(JOBS_PREFIX)
            && let Some(stem) = name.strip_suffix(JSON_SUFFIX)
        {
            validate_id("job id", stem)?;
            return Ok(InputKey::JobSpec {
                job_id: stem.to_owned(),
            });
        }
        Ok(InputKey::Other)
    }
}

/// The job id of a `results/<job-id>.json` key in the results bucket.
pub fn parse_result_key(key: &str) -> Result<Option<String>, PipelineError> {
    match key
        .strip_prefix(RESULTS_PREFIX)
        .and_then(|n| n.strip_suffix(JSON_SUFFIX))
    {
        Some(stem) => {
            validate_id("job id", stem)?;
            Ok(Some(stem.to_owned()))
        }
        None => Ok(None),
    }
}

/// Job ids and dataset names become key segments and email text: letters, digits, `-`, `_`
/// and `.`, 1–128 characters, not starting with `.` — so no `..`, no `/`, no control characters.
pub fn validate_id(what: &'static str, value: &str) -> Result<(), PipelineError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.starts_with('.')
        && !value.contains("..")
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(PipelineError::UnsafeName {
            what,
            value: value.chars().take(200).collect(),
        })
    }
}

pub fn job_spec_key(job_id: &str) -> String {
    format!("{JOBS_PREFIX}{job_id}{JSON_SUFFIX}")
}

pub fn dataset_prefix(dataset: &str) -> String {
    format!("{DATASETS_PREFIX}{dataset}/")
}

/// Splits `datasets/<dataset>/<label>/<file>` into `(label, file)`; other depths are not images
/// of the dataset.
pub fn dataset_label<'k>(dataset: &str, key: &'k str) -> Option<(&'k str, &'k str)> {
    let rest = key
        .strip_prefix(DATASETS_PREFIX)?
        .strip_prefix(dataset)?
        .strip_prefix('/')?;
    let (label, file) = rest.split_once('/')?;
    (!label.is_empty() && !file.is_empty() && !file.contains('/') && !file.starts_with('.'))
        .then_some((label, file))
}

pub fn prediction_key(image_path: &str) -> String {
    format!("{PREDICTIONS_PREFIX}{image_path}{JSON_SUFFIX}")
}

pub fn model_prefix(job_id: &str) -> String {
    format!("{MODELS_PREFIX}{job_id}/")
}

pub fn model_file_key(job_id: &str, file: &str) -> String {
    format!("{MODELS_PREFIX}{job_id}/{file}")
}

/// Points classification at the model it should use now.
pub const CURRENT_MODEL_KEY: &str = "models/current.json";

/// Every change of the serving model, append-only: `model-history/<sequence>.json`, each a copy
/// of the `models/current.json` it wrote. Outside `models/`, where a job id could collide.
pub const MODEL_HISTORY_PREFIX: &str = "model-history/";

/// Predictions whose top label is below its confidence threshold, one document per image, for
/// people to label: `review/<path under images/>.json`.
pub const REVIEW_PREFIX: &str = "review/";

/// Key of the history entry with `sequence` (zero-padded, so keys sort in order).
pub fn model_history_key(sequence: u64) -> String {
    format!("{MODEL_HISTORY_PREFIX}{sequence:012}{JSON_SUFFIX}")
}

/// Key of the review entry for the image at `images/<image_path>`.
pub fn review_key(image_path: &str) -> String {
    format!("{REVIEW_PREFIX}{image_path}{JSON_SUFFIX}")
}

/// Where the cached features of one dataset live for one backbone and input size (features
/// differ with either).
pub fn feature_cache_prefix(backbone_sha256: &str, input_size: u32, dataset: &str) -> String {
    format!("{CACHE_PREFIX}{backbone_sha256}/{input_size}/{dataset}/")
}

/// One packed object of cached features (`<name>.lvp`) under a dataset's cache prefix. Its
/// index (`<name>.json`, [`feature_pack_index_key`]) says which image versions it holds; the
/// name is a hash of those versions' ETags, so a retried write lands on the same key.
pub fn feature_pack_key(cache_prefix: &str, name: &str) -> String {
    format!("{cache_prefix}{FEATURE_PACKS}{name}.lvp")
}

/// The index of one feature pack: written after the pack, so an index always has its pack.
pub fn feature_pack_index_key(cache_prefix: &str, name: &str) -> String {
    format!("{cache_prefix}{FEATURE_PACKS}{name}{JSON_SUFFIX}")
}

/// Where a dataset's pack indexes are listed.
pub fn feature_pack_index_prefix(cache_prefix: &str) -> String {
    format!("{cache_prefix}{FEATURE_PACKS}")
}

const FEATURE_PACKS: &str = "packs/";

/// The state machine's work list for a job: a CSV with a `shard` header and one shard key per
/// row, read by the Map state's `ItemReader`.
pub fn shard_manifest_key(job_id: &str) -> String {
    format!("{CHECKPOINTS_PREFIX}{job_id}/shards.csv")
}

/// One shard of a job: the images one Map child extracts into one feature pack.
pub fn shard_key(job_id: &str, index: usize) -> String {
    format!("{}{index:05}{JSON_SUFFIX}", shard_prefix(job_id))
}

/// Why a shard's last attempt failed (`documents::ShardError`), so the failed result can say
/// which shard and why: Step Functions reports only that the Map failed. Deleted when the
/// shard succeeds.
pub fn shard_error_key(job_id: &str, shard_key: &str) -> String {
    let file = shard_key.rsplit('/').next().unwrap_or(shard_key);
    format!("{}{file}", shard_errors_prefix(job_id))
}

pub fn shard_errors_prefix(job_id: &str) -> String {
    format!("{CHECKPOINTS_PREFIX}{job_id}/shard-errors/")
}

/// One reclassification shard's rows of the job's predictions CSV
/// (`documents::ShardPredictions`), gathered into [`predictions_csv_key`] by the last step.
pub fn shard_predictions_key(job_id: &str, shard_key: &str) -> String {
    let file = shard_key.rsplit('/').next().unwrap_or(shard_key);
    format!("{}{file}", shard_predictions_prefix(job_id))
}

pub fn shard_predictions_prefix(job_id: &str) -> String {
    format!("{CHECKPOINTS_PREFIX}{job_id}/predictions/")
}

/// A reclassification's one CSV of every image's prediction, beside its result document
/// (a `.csv`, so creating it does not trigger the notifier).
pub fn predictions_csv_key(job_id: &str) -> String {
    format!("{RESULTS_PREFIX}{job_id}/predictions.csv")
}

/// Shard keys of a job start with this; a step is refused any other key.
pub fn shard_prefix(job_id: &str) -> String {
    format!("{CHECKPOINTS_PREFIX}{job_id}/shards/")
}

/// The spec a job runs with, copied when the job is accepted: the claim that makes a job start
/// once however many events announce it, and the pin that keeps a re-uploaded spec from
/// changing a job halfway.
pub fn accepted_spec_key(job_id: &str) -> String {
    format!("{CHECKPOINTS_PREFIX}{job_id}/spec.json")
}

/// Which trainer invocation runs the job now (see `documents::TrainerLease`).
pub fn lease_key(job_id: &str) -> String {
    format!("{CHECKPOINTS_PREFIX}{job_id}/lease.json")
}

pub fn checkpoint_key(job_id: &str) -> String {
    format!("{CHECKPOINTS_PREFIX}{job_id}/progress.json")
}

pub fn result_key(job_id: &str) -> String {
    format!("{RESULTS_PREFIX}{job_id}{JSON_SUFFIX}")
}

pub fn notification_key(job_id: &str) -> String {
    format!("{NOTIFICATIONS_PREFIX}{job_id}{JSON_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_keys_route_by_prefix() {
        assert_eq!(
            InputKey::parse("images/a/b c.jpg").unwrap(),
            InputKey::Image {
                path: "a/b c.jpg".into()
            }
        );
        assert_eq!(
            InputKey::parse("jobs/run-1.json").unwrap(),
            InputKey::JobSpec {
                job_id: "run-1".into()
            }
        );
        assert_eq!(InputKey::parse("images/").unwrap(), InputKey::Other);
        assert_eq!(InputKey::parse("jobs/readme.txt").unwrap(), InputKey::Other);
        assert_eq!(
            InputKey::parse("datasets/x/cat/1.jpg").unwrap(),
            InputKey::Other
        );
        for bad in [
            "jobs/../x.json",
            "jobs/a/b.json",
            "jobs/.json",
            "jobs/a\nb.json",
            "jobs/é.json",
        ] {
            assert!(InputKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dataset_keys_give_label_and_file() {
        assert_eq!(
            dataset_label("pets", "datasets/pets/cat/1.jpg"),
            Some(("cat", "1.jpg"))
        );
        assert_eq!(dataset_label("pets", "datasets/pets/cat/sub/1.jpg"), None);
        assert_eq!(dataset_label("pets", "datasets/petshop/cat/1.jpg"), None);
        assert_eq!(dataset_label("pets", "datasets/pets/readme.txt"), None);
    }

    #[test]
    fn written_keys_never_match_the_input_triggers() {
        use crate::event::{BucketRole, notified_function};
        // Everything the functions write goes to the results bucket; only a job's result may
        // notify anyone (the notifier, which writes nothing that notifies).
        for key in [
            prediction_key("a.jpg"),
            model_file_key("j", "model.onnx"),
            CURRENT_MODEL_KEY.to_owned(),
            feature_pack_key(&feature_cache_prefix("abc", 224, "d"), "0123abcd"),
            feature_pack_index_key(&feature_cache_prefix("abc", 224, "d"), "0123abcd"),
            shard_manifest_key("j"),
            shard_key("j", 7),
            shard_error_key("j", &shard_key("j", 7)),
            checkpoint_key("j"),
            lease_key("j"),
            accepted_spec_key("j"),
            notification_key("j"),
            model_history_key(1),
            review_key("a.jpg"),
            shard_predictions_key("j", &shard_key("j", 7)),
            predictions_csv_key("j"),
        ] {
            for bucket in [BucketRole::Input, BucketRole::Results] {
                assert_eq!(notified_function(bucket, &key), None, "{key}");
            }
        }
        assert_eq!(
            notified_function(BucketRole::Results, &result_key("j")),
            Some(crate::event::Function::Notifier)
        );
    }
}
