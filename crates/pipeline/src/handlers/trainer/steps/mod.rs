//! The steps of the training state machine (`statemachine/training.asl.json`), which runs jobs
//! too big for one chain of invocations: `prepare` lists the dataset and writes the shards of
//! what is not cached yet; a Distributed Map runs `extract` once per shard, in parallel, each
//! writing one feature pack; `train` trains the head from the packs and publishes exactly as
//! the in-Lambda path does; the Catch runs `fail`, which writes the failed result. Every step
//! is safe to repeat: packs are named by their content, and results are written once.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::{DatasetEntry, Trainer};
use crate::clock::{now_rfc3339, since_rfc3339};
use crate::documents::{
    Checkpoint, Document, ErrorInfo, JobRequest, JobSpec, JobStatus, Shard, ShardError, ShardImage,
};
use crate::error::{PipelineError, Result};
use crate::launcher::TrainerEvent;
use crate::layout;
use crate::observe;

/// What Step Functions reports when a Distributed Map's children failed.
const MAP_FAILED: &str = "States.ExceedToleratedFailureThreshold";

/// Shard documents written at once by `prepare`.
const SHARD_WRITES: usize = 16;

/// What the trainer function is invoked with: a job (from the upload trigger or its own
/// hand-over) or a step of the state machine (it carries `"step"`).
#[derive(Debug, Clone, PartialEq)]
pub enum TrainerInput {
    Job(TrainerEvent),
    Step(MapStep),
}

impl<'de> Deserialize<'de> for TrainerInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let parsed = if value.get("step").is_some() {
            serde_json::from_value(value).map(TrainerInput::Step)
        } else {
            serde_json::from_value(value).map(TrainerInput::Job)
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

/// One step of the training state machine.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case", deny_unknown_fields)]
pub enum MapStep {
    Prepare { job_id: String },
    Extract { job_id: String, shard: String },
    Train { job_id: String },
    Fail { job_id: String, error: StepError },
}

/// What a state machine's `Catch` puts in `ResultPath`: the error name and its cause (for a
/// function error, the JSON of Lambda's `errorType` and `errorMessage`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StepError {
    #[serde(rename = "Error", default)]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: String,
}

/// What a step returns to the state machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum StepOutput {
    Prepared {
        job_id: String,
        /// `ready`, or `finished` when the job already has a result (nothing to do).
        status: &'static str,
        images: usize,
        cached: usize,
        shards: usize,
        manifest: ManifestLocation,
    },
    Extracted {
        shard: String,
        images: usize,
        extracted: usize,
    },
    /// `status`: `succeeded`, `failed`, `already_finished`, `recorded` or `already_recorded`.
    Finished {
        job_id: String,
        status: &'static str,
    },
}

/// Where the Map state's `ItemReader` finds the shard list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ManifestLocation {
    pub bucket: String,
    pub key: String,
}

impl Trainer {
    /// Handles one invocation of the trainer function, whichever input it was given; the
    /// response is what Lambda returns (the state machine reads a step's output from it).
    pub async fn handle_input(
        &self,
        input: &TrainerInput,
        deadline: Instant,
        invocation: &str,
    ) -> Result<serde_json::Value> {
        let encode = |e: serde_json::Error| PipelineError::Encode {
            what: "trainer response",
            reason: e.to_string(),
        };
        match input {
            TrainerInput::Step(step) => {
                serde_json::to_value(self.handle_step(step, deadline).await?).map_err(encode)
            }
            TrainerInput::Job(event) => {
                let outcome = self.handle_invocation(event, deadline, invocation).await?;
                let outcome: String = format!("{outcome:?}").chars().take(500).collect();
                Ok(serde_json::json!({ "outcome": outcome }))
            }
        }
    }

    /// Runs one step of the training state machine. Transient failures are returned (the
    /// state machine retries them); so is every other failure, which the state machine's Catch
    /// hands to [`MapStep::Fail`].
    pub async fn handle_step(&self, step: &MapStep, deadline: Instant) -> Result<StepOutput> {
        match step {
            MapStep::Prepare { job_id } => self.prepare(job_id).await,
            MapStep::Extract { job_id, shard } => {
                let extracted = self.extract_shard(job_id, shard, deadline).await;
                self.note_shard_outcome(job_id, shard, &extracted).await;
                extracted
            }
            MapStep::Train { job_id } => self.train_step(job_id).await,
            MapStep::Fail { job_id, error } => self.record_step_failure(job_id, error).await,
        }
    }

    /// Lists the dataset, drops what is cached, and writes one shard document per
    /// `MAP_SHARD_IMAGES` missing images plus the CSV manifest of their keys.
    async fn prepare(&self, job_id: &str) -> Result<StepOutput> {
        let bucket = &self.config.results_bucket;
        let manifest = ManifestLocation {
            bucket: bucket.clone(),
            key: layout::shard_manifest_key(job_id),
        };
        let mut prepared = StepOutput::Prepared {
            job_id: job_id.to_owned(),
            status: "finished",
            images: 0,
            cached: 0,
            shards: 0,
            manifest,
        };
        if self.has_result(job_id).await? {
            return Ok(prepared);
        }
        let (images, cached, shards) = match self.accepted_spec(job_id).await? {
            JobRequest::Train(spec) => self.prepare_training(job_id, &spec).await?,
            JobRequest::Classify(spec) => {
                let (images, shards) = self.prepare_classification(job_id, &spec).await?;
                (images, 0, shards)
            }
        };
        // When the job was prepared: the result's duration counts from here.
        let checkpoint = Checkpoint {
            continuation: 0,
            images_total: images,
            images_done: cached,
            elapsed_ms: 0.0,
            updated_at: now_rfc3339(),
        };
        self.store
            .put_json(bucket, &layout::checkpoint_key(job_id), &checkpoint)
            .await?;
        info!(
            job_id,
            images, cached, shards, "job prepared for the state machine"
        );
        if let StepOutput::Prepared {
            status,
            images: listed,
            cached: skipped,
            shards: count,
            ..
        } = &mut prepared
        {
            *status = "ready";
            (*listed, *skipped, *count) = (images, cached, shards);
        }
        Ok(prepared)
    }

    /// Lists the dataset, drops what is cached, and writes the shards of the rest; returns
    /// (images, cached, shards).
    async fn prepare_training(
        &self,
        job_id: &str,
        spec: &JobSpec,
    ) -> Result<(usize, usize, usize)> {
        let backbone = self.backbone_for(spec.input_size).await?;
        let entries = self.list_dataset(spec).await?;
        let index = self.cache_for(&backbone, &spec.dataset).index().await?;
        let missing: Vec<ShardImage> = entries
            .iter()
            .filter(|e| !index.contains(&e.etag))
            .map(|e| ShardImage {
                key: e.key.clone(),
                label: e.label.clone(),
                etag: e.etag.clone(),
                size: e.size,
            })
            .collect();
        let shards: Vec<Shard> = missing
            .chunks(self.config.map_shard_images.max(1))
            .map(|images| Shard {
                job_id: job_id.to_owned(),
                dataset: spec.dataset.clone(),
                input_size: spec.input_size,
                images: images.to_vec(),
            })
            .collect();
        let count = self.write_shards(job_id, &shards).await?;
        Ok((entries.len(), entries.len() - missing.len(), count))
    }

    /// Writes the shard documents (`checkpoints/<id>/shards/<n>.json`), then the CSV manifest
    /// the Map reads (header `shard`, one key per row). Returns how many shards there are.
    pub(super) async fn write_shards<T: Document + Sync>(
        &self,
        job_id: &str,
        shards: &[T],
    ) -> Result<usize> {
        let bucket = &self.config.results_bucket;
        let keys: Vec<String> = (0..shards.len())
            .map(|n| layout::shard_key(job_id, n))
            .collect();
        let written: Vec<Result<()>> = futures::stream::iter(keys.iter().zip(shards))
            .map(|(key, shard)| self.store.put_json(bucket, key, shard))
            .buffer_unordered(SHARD_WRITES)
            .collect()
            .await;
        written.into_iter().collect::<Result<Vec<()>>>()?;
        let mut csv = String::from("shard\n");
        for key in &keys {
            csv.push_str(key);
            csv.push('\n');
        }
        let manifest_key = layout::shard_manifest_key(job_id);
        self.store
            .put(bucket, &manifest_key, csv.into_bytes(), "text/csv")
            .await?;
        Ok(keys.len())
    }

    /// Extracts one shard's images into one feature pack.
    async fn extract_shard(
        &self,
        job_id: &str,
        shard_key: &str,
        deadline: Instant,
    ) -> Result<StepOutput> {
        layout::validate_id("job id", job_id)?;
        if !shard_key.starts_with(&layout::shard_prefix(job_id)) {
            return Err(PipelineError::UnsafeName {
                what: "shard key",
                value: shard_key.to_owned(),
            });
        }
        if let JobRequest::Classify(_) = self.accepted_spec(job_id).await? {
            return self.classify_shard(job_id, shard_key, deadline).await;
        }
        let shard = self
            .store
            .get_json::<Shard>(&self.config.results_bucket, shard_key)
            .await?
            .document;
        let backbone = self.backbone_for(shard.input_size).await?;
        let cache = self.cache_for(&backbone, &shard.dataset);
        let entries: Vec<DatasetEntry> = shard
            .images
            .into_iter()
            .map(|image| DatasetEntry {
                key: image.key,
                label: image.label,
                etag: image.etag,
                size: image.size,
            })
            .collect();
        let images: Vec<&DatasetEntry> = entries.iter().collect();
        let total = images.len();
        let saved = self
            .extract_missing(&backbone, &cache, &images, (0, total), total, deadline)
            .await?;
        if saved.images < total {
            // Transient: a retry starts the shard again with a whole invocation's time.
            return Err(PipelineError::WorkerFailed(format!(
                "shard {shard_key}: time ran out after {} of {total} images",
                saved.images
            )));
        }
        Ok(StepOutput::Extracted {
            shard: shard_key.to_owned(),
            images: total,
            extracted: saved.images,
        })
    }

    /// Keeps the error of a shard's failed attempt where the `fail` step finds it, and forgets
    /// it when an attempt succeeds (best effort: this only improves the failure's message).
    async fn note_shard_outcome(&self, job_id: &str, shard: &str, outcome: &Result<StepOutput>) {
        if layout::validate_id("job id", job_id).is_err()
            || !shard.starts_with(&layout::shard_prefix(job_id))
        {
            return;
        }
        let bucket = &self.config.results_bucket;
        let key = layout::shard_error_key(job_id, shard);
        let _ = match outcome {
            Ok(_) => self.store.delete(bucket, &key).await,
            Err(error) => {
                let noted = ShardError {
                    shard: shard.to_owned(),
                    kind: error.kind().to_owned(),
                    message: error.to_string(),
                };
                self.store.put_json(bucket, &key, &noted).await
            }
        };
    }

    /// The first shard whose last attempt failed, and how many did.
    async fn failed_shards(&self, job_id: &str) -> Option<(ShardError, usize)> {
        let bucket = &self.config.results_bucket;
        let listed = self
            .store
            .list(bucket, &layout::shard_errors_prefix(job_id))
            .await
            .ok()?;
        let first = listed.first()?;
        let stored = self
            .store
            .get_json_lenient::<ShardError>(bucket, &first.key)
            .await
            .ok()??;
        Some((stored.document?, listed.len()))
    }

    /// Trains the head from the packs and publishes the model and result, as the in-Lambda
    /// path does once its extraction is done.
    async fn train_step(&self, job_id: &str) -> Result<StepOutput> {
        let finished = |status| StepOutput::Finished {
            job_id: job_id.to_owned(),
            status,
        };
        if self.has_result(job_id).await? {
            return Ok(finished("already_finished"));
        }
        let since_prepared = self.since_prepared(job_id).await;
        let spec = match self.accepted_spec(job_id).await? {
            JobRequest::Train(spec) => spec,
            JobRequest::Classify(spec) => {
                let result = self
                    .summarise_classification(job_id, &spec, since_prepared)
                    .await?;
                return Ok(finished(match result.status {
                    JobStatus::Succeeded => "succeeded",
                    JobStatus::Failed => "failed",
                }));
            }
        };
        let started = Instant::now();
        let backbone = self.backbone_for(spec.input_size).await?;
        let entries = self.list_dataset(&spec).await?;
        let cache = self.cache_for(&backbone, &spec.dataset);
        let set = cache.read(&cache.index().await?, &entries).await?;
        let extraction_ms = since_prepared.as_secs_f64() * 1000.0;
        let trained = self
            .train(backbone, set, entries, &spec, extraction_ms)
            .await?;
        let duration = since_prepared + started.elapsed();
        let result = self.publish(job_id, &spec, &trained, 0, duration).await?;
        Ok(finished(match result.status {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }))
    }

    /// Time since `prepare` ran (its checkpoint), i.e. the extraction by the Map.
    async fn since_prepared(&self, job_id: &str) -> Duration {
        self.checkpoint(job_id)
            .await
            .and_then(|c| since_rfc3339(&c.updated_at))
            .unwrap_or_default()
    }

    /// The Catch path: writes the job's failed result (once) from what the state machine
    /// caught, so the owner gets one email as on the in-Lambda path.
    async fn record_step_failure(&self, job_id: &str, error: &StepError) -> Result<StepOutput> {
        let mut cause = caught_error(error);
        // A failed Map says only that; the shard's own error says what went wrong.
        if error.error == MAP_FAILED
            && let Some((shard, failed)) = self.failed_shards(job_id).await
        {
            cause = ErrorInfo {
                kind: shard.kind,
                message: format!(
                    "{failed} shard(s) failed after their retries; {}: {}",
                    shard.shard, shard.message
                ),
            };
        }
        let written =
            crate::handlers::record_failed_job(&self.store, &self.config, job_id, 0, cause).await?;
        if written {
            metrics::counter!(observe::JOBS_FAILED).increment(1);
        }
        Ok(StepOutput::Finished {
            job_id: job_id.to_owned(),
            status: if written {
                "recorded"
            } else {
                "already_recorded"
            },
        })
    }
}

/// The user-facing error of a failed execution. A function's own error keeps its kind
/// (`errorType` back in snake case) and message; anything else (a Lambda throttle after the
/// retries, a Map that exceeded its failure tolerance) is `step_failed` with the names
/// Step Functions gave.
fn caught_error(caught: &StepError) -> ErrorInfo {
    let reported: Option<serde_json::Value> = serde_json::from_str(&caught.cause).ok();
    let field = |name: &str| {
        reported
            .as_ref()
            .and_then(|r| r.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match (field("errorType"), field("errorMessage")) {
        // Ours: a kind in PascalCase. Lambda's own (`Runtime.OutOfMemory`) have a dot.
        (Some(kind), Some(message)) if kind == caught.error && !kind.contains('.') => ErrorInfo {
            kind: snake_case(&kind),
            message,
        },
        (_, message) => {
            let detail = message.unwrap_or_else(|| caught.cause.clone());
            let detail: String = detail.chars().take(500).collect();
            ErrorInfo {
                kind: "step_failed".to_owned(),
                message: format!(
                    "the training state machine stopped: {}{}{}{}",
                    caught.error,
                    if detail.is_empty() { "" } else { ": " },
                    detail,
                    hint(&caught.error)
                ),
            }
        }
    }
}

/// What to do about the errors of Lambda and Step Functions themselves that a job can meet.
fn hint(error: &str) -> &'static str {
    match error {
        "Runtime.OutOfMemory" => {
            " (the trainer ran out of memory: raise the TrainerMemory parameter or split the dataset)"
        }
        "States.Timeout" | "Sandbox.Timedout" => {
            " (a step ran past its time: lower MapShardImages, or raise TrainerMemory for more CPU)"
        }
        "States.ExceedToleratedFailureThreshold" => {
            " (a shard failed after its retries: its error is in the Map run's failed child execution)"
        }
        _ => "",
    }
}

/// `InvalidSpec` → `invalid_spec`: the inverse of the Diagnostic's PascalCase error types.
fn snake_case(pascal: &str) -> String {
    let mut out = String::with_capacity(pascal.len() + 4);
    for (i, c) in pascal.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests;
