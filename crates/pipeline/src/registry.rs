//! The model registry in the results bucket: the immutable versions under `models/<id>/`, the
//! serving pointer `models/current.json`, and its append-only history `model-history/`. The
//! trainer (champion vs challenger) and `lambda-vision models` change the pointer only through
//! [`Registry::change`]: a conditional write, so two changes at once cannot lose one.

use vision::{HeadDocument, bundle::HEAD_FILE};

use crate::clock::now_rfc3339;
use crate::documents::{CurrentModel, JobResult, ModelChange};
use crate::error::{PipelineError, Result};
use crate::layout;
use crate::store::{S3Store, Stored};

/// How many times a change is retried when another one got in first.
const CHANGE_ATTEMPTS: usize = 5;

/// The registry of one results bucket.
pub struct Registry<'a> {
    store: &'a S3Store,
    bucket: &'a str,
}

/// One trained model as `lambda-vision models list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub model_id: String,
    /// The job's result, when it can be read (date, dataset, labels, scores).
    pub result: Option<JobResult>,
    pub serving: bool,
}

/// A change to make: which model, why, and who asks.
#[derive(Debug, Clone)]
pub struct ChangeRequest<'a> {
    pub model_id: &'a str,
    pub action: ModelChange,
    pub changed_by: &'a str,
    pub reason: String,
}

impl<'a> Registry<'a> {
    pub fn new(store: &'a S3Store, bucket: &'a str) -> Self {
        Registry { store, bucket }
    }

    /// The serving pointer with its ETag, or `None` while ImageNet classes are served.
    pub async fn serving(&self) -> Result<Option<Stored<CurrentModel>>> {
        self.store
            .get_json_if_exists(self.bucket, layout::CURRENT_MODEL_KEY)
            .await
    }

    /// Points classification at `request.model_id` if the pointer is still `expected` (`None`:
    /// no model serves yet). `Ok(None)` when another change got in first: read it and decide
    /// again. The history entry is written after the pointer, and a missing one is filled in
    /// by the next change, so a crash between the two writes loses no entry.
    pub async fn change(
        &self,
        expected: Option<&Stored<CurrentModel>>,
        request: &ChangeRequest<'_>,
    ) -> Result<Option<CurrentModel>> {
        let previous = expected.map(|stored| &stored.document);
        // The pointer being replaced is in the history; one written before there was a history
        // (sequence 0) is appended to it first, so a rollback can return to it.
        let previous_sequence = match previous {
            Some(previous) if previous.sequence > 0 => {
                self.record(previous).await?;
                previous.sequence
            }
            Some(legacy) => {
                let appended = CurrentModel {
                    sequence: self.last_sequence().await? + 1,
                    ..legacy.clone()
                };
                self.record(&appended).await?;
                appended.sequence
            }
            // No pointer (none yet, or deleted to serve ImageNet): after the history's end.
            None => self.last_sequence().await?,
        };
        let sequence = previous_sequence + 1;
        let next = CurrentModel {
            model_id: request.model_id.to_owned(),
            head_key: layout::model_file_key(request.model_id, HEAD_FILE),
            updated_at: now_rfc3339(),
            sequence,
            previous_model_id: previous.map(|p| p.model_id.clone()),
            action: request.action,
            changed_by: request.changed_by.to_owned(),
            reason: request.reason.clone(),
        };
        let key = layout::CURRENT_MODEL_KEY;
        let written = match expected.and_then(|stored| stored.etag.as_deref()) {
            Some(etag) => {
                self.store
                    .put_json_if_match(self.bucket, key, &next, etag)
                    .await
            }
            None if expected.is_some() => Err(PipelineError::ModelChangeRefused(format!(
                "s3://{}/{key} has no ETag to guard the change with",
                self.bucket
            ))),
            None => self.store.put_json_if_absent(self.bucket, key, &next).await,
        };
        match written {
            Ok(true) => {}
            Ok(false) | Err(PipelineError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error),
        }
        self.record(&next).await?;
        Ok(Some(next))
    }

    /// Writes `entry` to the history unless its sequence is there already.
    async fn record(&self, entry: &CurrentModel) -> Result<()> {
        let key = layout::model_history_key(entry.sequence);
        self.store
            .put_json_if_absent(self.bucket, &key, entry)
            .await
            .map(drop)
    }

    /// The highest sequence in the history (0 when it is empty).
    async fn last_sequence(&self) -> Result<u64> {
        let listed = self
            .store
            .list(self.bucket, layout::MODEL_HISTORY_PREFIX)
            .await?;
        Ok(listed
            .iter()
            .filter_map(|o| {
                o.key
                    .strip_prefix(layout::MODEL_HISTORY_PREFIX)?
                    .strip_suffix(layout::JSON_SUFFIX)?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0))
    }

    /// Every change of the serving model, oldest first.
    pub async fn history(&self) -> Result<Vec<CurrentModel>> {
        let mut listed = self
            .store
            .list(self.bucket, layout::MODEL_HISTORY_PREFIX)
            .await?;
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        let mut entries = Vec::with_capacity(listed.len());
        for object in listed {
            let stored = self
                .store
                .get_json::<CurrentModel>(self.bucket, &object.key)
                .await?;
            entries.push(stored.document);
        }
        Ok(entries)
    }

    /// The trained versions (every `models/<id>/head.json`), oldest first, with their results.
    pub async fn versions(&self) -> Result<Vec<ModelVersion>> {
        let serving = self.serving().await?.map(|s| s.document.model_id);
        let suffix = format!("/{HEAD_FILE}");
        let mut ids: Vec<String> = self
            .store
            .list(self.bucket, layout::MODELS_PREFIX)
            .await?
            .into_iter()
            .filter_map(|o| {
                let rest = o.key.strip_prefix(layout::MODELS_PREFIX)?;
                let id = rest.strip_suffix(&suffix)?;
                (!id.contains('/')).then(|| id.to_owned())
            })
            .collect();
        ids.sort();
        let mut versions = Vec::with_capacity(ids.len());
        for model_id in ids {
            let result = self
                .store
                .get_json_lenient::<JobResult>(self.bucket, &layout::result_key(&model_id))
                .await?
                .and_then(|stored| stored.document);
            versions.push(ModelVersion {
                serving: serving.as_deref() == Some(model_id.as_str()),
                model_id,
                result,
            });
        }
        versions.sort_by(|a, b| finished_at(a).cmp(finished_at(b)));
        Ok(versions)
    }

    /// The head of version `model_id`, checked to exist, parse, and run on `backbone_sha256`.
    pub async fn check_version(&self, model_id: &str, backbone_sha256: &str) -> Result<()> {
        layout::validate_id("model id", model_id)?;
        let key = layout::model_file_key(model_id, HEAD_FILE);
        let head = match self.store.get_json::<HeadDocument>(self.bucket, &key).await {
            Ok(stored) => stored.document,
            Err(PipelineError::NotFound { .. }) => {
                return Err(PipelineError::ModelChangeRefused(format!(
                    "there is no model {model_id:?}: s3://{}/{key} does not exist (see `lambda-vision models list`)",
                    self.bucket
                )));
            }
            Err(error) => return Err(error),
        };
        if head.backbone_sha256 != backbone_sha256 {
            return Err(PipelineError::ModelChangeRefused(format!(
                "model {model_id:?} was trained on backbone {}, but this build serves {backbone_sha256}: its head would be meaningless",
                short(&head.backbone_sha256)
            )));
        }
        Ok(())
    }

    /// Makes version `model_id` serve, by hand.
    pub async fn promote(&self, model_id: &str, backbone_sha256: &str) -> Result<CurrentModel> {
        self.check_version(model_id, backbone_sha256).await?;
        for _ in 0..CHANGE_ATTEMPTS {
            let current = self.serving().await?;
            if let Some(current) = current.as_ref().map(|c| &c.document)
                && current.model_id == model_id
            {
                return Err(PipelineError::ModelChangeRefused(format!(
                    "model {model_id:?} is already serving"
                )));
            }
            let request = ChangeRequest {
                model_id,
                action: ModelChange::Promoted,
                changed_by: "cli",
                reason: "promoted by hand (lambda-vision models promote)".to_owned(),
            };
            if let Some(changed) = self.change(current.as_ref(), &request).await? {
                return Ok(changed);
            }
        }
        Err(busy())
    }

    /// Makes the model that served before the current one serve again. Rollbacks undo
    /// promotions in order, like a stack: two rollbacks go back two models.
    pub async fn rollback(&self, backbone_sha256: &str) -> Result<CurrentModel> {
        for _ in 0..CHANGE_ATTEMPTS {
            let Some(current) = self.serving().await? else {
                return Err(PipelineError::ModelChangeRefused(
                    "no trained model serves yet: there is nothing to roll back".to_owned(),
                ));
            };
            if current.document.sequence == 0 {
                return Err(PipelineError::ModelChangeRefused(format!(
                    "models/current.json ({}) predates the model history: there is no record of the model it replaced; promote one by id instead",
                    current.document.model_id
                )));
            }
            self.record(&current.document).await?;
            let stack = serving_stack(&self.history().await?);
            let Some(target) = stack.len().checked_sub(2).map(|i| stack[i].clone()) else {
                return Err(PipelineError::ModelChangeRefused(format!(
                    "model {:?} is the first one promoted: there is no earlier model to roll back to",
                    current.document.model_id
                )));
            };
            self.check_version(&target, backbone_sha256).await?;
            let request = ChangeRequest {
                model_id: &target,
                action: ModelChange::RolledBack,
                changed_by: "cli",
                reason: format!("rolled back from {}", current.document.model_id),
            };
            if let Some(changed) = self.change(Some(&current), &request).await? {
                return Ok(changed);
            }
        }
        Err(busy())
    }
}

/// The models a rollback can return to, oldest first: each promotion pushes its model, each
/// rollback pops one.
pub fn serving_stack(history: &[CurrentModel]) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    for entry in history {
        match entry.action {
            ModelChange::RolledBack => {
                stack.pop();
                if stack.last() != Some(&entry.model_id) {
                    // A history with gaps: trust the entry over the replay.
                    stack.push(entry.model_id.clone());
                }
            }
            ModelChange::Trained | ModelChange::Promoted => stack.push(entry.model_id.clone()),
        }
    }
    stack
}

fn finished_at(version: &ModelVersion) -> &str {
    version
        .result
        .as_ref()
        .map_or("", |result| result.finished_at.as_str())
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn busy() -> PipelineError {
    PipelineError::ModelChangeRefused(format!(
        "models/current.json changed {CHANGE_ATTEMPTS} times while this change was being made; try again"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(model_id: &str, action: ModelChange) -> CurrentModel {
        CurrentModel {
            model_id: model_id.to_owned(),
            head_key: String::new(),
            updated_at: String::new(),
            sequence: 0,
            previous_model_id: None,
            action,
            changed_by: String::new(),
            reason: String::new(),
        }
    }

    #[test]
    fn rollbacks_undo_promotions_in_order() {
        use ModelChange::*;
        let history = [
            entry("a", Trained),
            entry("b", Trained),
            entry("c", Promoted),
        ];
        assert_eq!(serving_stack(&history), ["a", "b", "c"]);
        let once = [&history[..], &[entry("b", RolledBack)]].concat();
        assert_eq!(serving_stack(&once), ["a", "b"]);
        let twice = [&once[..], &[entry("a", RolledBack)]].concat();
        assert_eq!(serving_stack(&twice), ["a"], "nothing left to roll back to");
        let again = [&twice[..], &[entry("d", Trained)]].concat();
        assert_eq!(serving_stack(&again), ["a", "d"]);
    }
}
