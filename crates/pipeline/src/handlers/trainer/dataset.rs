//! The dataset of a job: the labelled images under `datasets/<name>/`, each with the version
//! (ETag) its cached features are found by, and the limits a job must stay within.

use std::collections::HashSet;

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
    /// Lists the dataset, sorted by key; fails the job when it is empty or over the limits.
    pub(super) async fn list_dataset(&self, spec: &JobSpec) -> Result<Vec<DatasetEntry>> {
        let listed = self
            .store
            .list(
                &self.config.input_bucket,
                &layout::dataset_prefix(&spec.dataset),
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
        let too_many = if entries.len() > self.options.max_dataset_images {
            Some(format!(
                "{} images under datasets/{}/, at most {} per job",
                entries.len(),
                spec.dataset,
                self.options.max_dataset_images
            ))
        } else if labels.len() > self.options.max_labels {
            Some(format!(
                "{} labels under datasets/{}/, at most {} per job",
                labels.len(),
                spec.dataset,
                self.options.max_labels
            ))
        } else {
            None
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
}
