//! The dataset of a job: the labelled images under `datasets/<name>/`, each with the version
//! (ETag) its cached features are found by, and the limits a job must stay within.

use std::collections::HashSet;

use vision::head::SOLVER_BYTES_PER_LABEL;

use super::Trainer;
use crate::documents::JobSpec;
use crate::error::{PipelineError, Result};
use crate::layout;

/// One labelled image of the dataset.
pub(super) struct DatasetEntry {
    pub(super) key: String,
    pub(super) label: String,
    /// The listed version's ETag and size: what was extracted.
    pub(super) etag: String,
    pub(super) size: u64,
}

impl Trainer {
    /// Lists the dataset, sorted by key; fails the job when it is empty or over the limits. The
    /// listing stops a page past the image limit, so a huge prefix costs neither memory nor
    /// thousands of LISTs.
    pub(super) async fn list_dataset(&self, spec: &JobSpec) -> Result<Vec<DatasetEntry>> {
        let limit = self.options.max_dataset_images;
        let listed = self
            .store
            .list_at_most(
                &self.config.input_bucket,
                &layout::dataset_prefix(&spec.dataset),
                limit,
                |key| layout::dataset_label(&spec.dataset, key).is_some(),
            )
            .await?;
        let entries: Vec<DatasetEntry> = listed
            .iter()
            .filter_map(|object| {
                let (label, _) = layout::dataset_label(&spec.dataset, &object.key)?;
                Some(DatasetEntry {
                    key: object.key.clone(),
                    label: label.to_owned(),
                    etag: object.etag.clone(),
                    size: object.size,
                })
            })
            .collect();
        let labels: HashSet<&str> = entries.iter().map(|e| e.label.as_str()).collect();
        let too_many = if listed.len() > limit {
            Some(format!(
                "more than {limit} images under datasets/{}/, at most {limit} per job: split the dataset",
                spec.dataset
            ))
        } else if labels.len() > self.options.max_labels {
            Some(format!(
                "{} labels under datasets/{}/, at most {} per job",
                labels.len(),
                spec.dataset,
                self.options.max_labels
            ))
        } else {
            self.memory_shortfall(entries.len(), labels.len(), spec.train_config().folds)
        };
        if let Some(reason) = too_many {
            return Err(PipelineError::InvalidSpec {
                field: Some("dataset".to_owned()),
                reason,
            });
        }
        if entries.is_empty() {
            return Err(PipelineError::InvalidSpec {
                field: Some("dataset".to_owned()),
                reason: format!(
                    "no images under s3://{}/{}; upload them as datasets/{}/<label>/<image>",
                    self.config.input_bucket,
                    layout::dataset_prefix(&spec.dataset),
                    spec.dataset
                ),
            });
        }
        Ok(entries)
    }

    /// Why this function's memory cannot train `images` images of `labels` labels, if it
    /// cannot: the head is trained in one invocation from every feature in memory (5 KB per
    /// image, held once, plus the penalty search's bounded copy; measured in `load.rs` and
    /// `map_load.rs`) by fits whose solver state grows with the labels (one fit per fold at
    /// once, as many as there are CPUs), so a job that would run out of memory after its whole
    /// extraction is refused before it.
    fn memory_shortfall(&self, images: usize, labels: usize, folds: usize) -> Option<String> {
        let available = self.config.function_memory_mb?;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let solver_bytes = (labels * cpus.min(folds)) as u64 * SOLVER_BYTES_PER_LABEL;
        let needed = TRAINING_BASE_MB
            + (images as u64 * TRAINING_BYTES_PER_IMAGE + solver_bytes).div_ceil(1 << 20);
        (needed > available).then(|| {
            format!(
                "{images} images of {labels} labels need about {needed} MB to train the head (their features are held in memory, and the solver's state grows with the labels); the trainer has {available} MB: raise the TrainerMemory parameter (up to 10240) or split the dataset"
            )
        })
    }
}

/// The trainer's memory before any features: runtime, model, buffers (115–128 MiB measured),
/// and the penalty search's standardised copy of about `vision::head::CV_MAX_IMAGES` rows
/// (~49 MiB).
const TRAINING_BASE_MB: u64 = 256;
/// Peak memory per dataset image when training: 5 KB of features, held once, and its key,
/// label and ETag a few times over (5.4 KB measured in `map_load.rs` at 50,000 images; the
/// rest is headroom for long keys).
const TRAINING_BYTES_PER_IMAGE: u64 = 8 * 1024;
