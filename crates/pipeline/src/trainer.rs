//! The trainer function: one training job, resumable. Features are cached per dataset object
//! (keyed by backbone, input size and ETag), so the cache *is* the checkpoint: a job that is
//! cut off, retried or continued redoes no image and counts none twice.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vision::{
    BUNDLED_MODEL, Backbone, ExtractOptions, Extracted, FEATURE_LEN, FeatureSet, LabeledImage,
    SkippedImage, SourceFailure, SourceItem, TrainedBundle,
};

use crate::config::Config;
use crate::error::{PipelineError, Result};
use crate::job::{JobResult, JobSpec, JobStatus, ModelInfo, TrainingSummary};
use crate::launcher::{TrainerEvent, TrainerLauncher};
use crate::layout;
use crate::store::S3Store;
use crate::upload::CurrentModel;

/// Tuning of one trainer invocation.
#[derive(Debug, Clone)]
pub struct TrainerOptions {
    /// Images extracted between deadline checks (and cache writes).
    pub chunk_size: usize,
    /// Time kept in reserve before the deadline to save progress and hand over.
    pub safety_margin: Duration,
    /// S3 GETs in flight at once.
    pub fetch_concurrency: usize,
    /// Extraction threads.
    pub workers: usize,
    /// Told about progress as it happens (the demo draws bars with it).
    pub progress: Option<ProgressObserver>,
    /// A dataset with more images fails its job up front (features alone need 5 KB each).
    pub max_dataset_images: usize,
    /// A dataset with more labels fails its job up front.
    pub max_labels: usize,
}

/// How far a job has come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TrainingProgress {
    /// The dataset is listed; `cached` of `total` images need no extraction.
    DatasetListed { total: usize, cached: usize },
    /// One more image went through the backbone (`done` counts cached ones too).
    ImageExtracted { done: usize, total: usize },
    /// Cross-validation scored one more of the `total` penalty strengths.
    PenaltyScored {
        done: usize,
        total: usize,
        cv_accuracy: f64,
    },
}

/// A callback for [`TrainingProgress`]; called from worker threads.
#[derive(Clone)]
pub struct ProgressObserver(pub Arc<dyn Fn(TrainingProgress) + Send + Sync>);

impl std::fmt::Debug for ProgressObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressObserver")
    }
}

impl Default for TrainerOptions {
    fn default() -> Self {
        TrainerOptions {
            chunk_size: 64,
            safety_margin: Duration::from_secs(90),
            fetch_concurrency: 8,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            progress: None,
            max_dataset_images: 100_000,
            max_labels: 1_000,
        }
    }
}

/// What one invocation did.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainerOutcome {
    /// The job ended (successfully or not) and `results/<id>.json` was written.
    Finished(Box<JobResult>),
    /// Time ran short: progress is saved and invocation `continuation` was started.
    Continued {
        continuation: u32,
        images_done: usize,
    },
    /// A result already exists (a duplicate or late invocation).
    AlreadyFinished,
}

/// `checkpoints/<id>/progress.json`: informational; the feature cache holds the real progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub continuation: u32,
    pub images_total: usize,
    pub images_done: usize,
    /// Wall time of all invocations so far, so the result reports the whole job's duration.
    #[serde(default)]
    pub elapsed_ms: f64,
    pub updated_at: String,
}

pub struct Trainer {
    config: Config,
    store: S3Store,
    launcher: Arc<dyn TrainerLauncher>,
    backbone: Arc<Backbone>,
    options: TrainerOptions,
}

struct DatasetEntry {
    key: String,
    label: String,
    cache_key: String,
}

enum Progress {
    Complete(Box<TrainedBundle>),
    OutOfTime { done: usize, total: usize },
}

const FEATURES_MAGIC: &[u8; 4] = b"LVF1";
const SKIPPED_MAGIC: &[u8; 4] = b"LVS1";

impl Trainer {
    pub fn new(
        config: Config,
        store: S3Store,
        launcher: Arc<dyn TrainerLauncher>,
        backbone: Arc<Backbone>,
        options: TrainerOptions,
    ) -> Self {
        Trainer {
            config,
            store,
            launcher,
            backbone,
            options,
        }
    }

    /// Runs (or continues) the job until it finishes or `deadline` − safety margin is reached.
    /// Transient AWS failures return `Err` so Lambda retries the invocation, which resumes
    /// from the cache; every other failure ends the job with a failed result.
    pub async fn handle(&self, event: &TrainerEvent, deadline: Instant) -> Result<TrainerOutcome> {
        let started = Instant::now();
        layout::validate_id("job id", &event.job_id)?;
        let job_id = event.job_id.as_str();
        let results = &self.config.results_bucket;
        if self
            .store
            .get_if_exists(results, &layout::result_key(job_id))
            .await?
            .is_some()
        {
            return Ok(TrainerOutcome::AlreadyFinished);
        }
        let spec = match self
            .accepted_spec(job_id)
            .await
            .and_then(|bytes| JobSpec::parse(&bytes))
        {
            Ok(spec) => spec,
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => {
                return self
                    .finish_failed(job_id, None, Vec::new(), &error, event.continuation)
                    .await;
            }
        };
        let earlier = if event.continuation == 0 {
            Duration::ZERO
        } else {
            self.earlier_invocations(job_id).await
        };
        match self.run(job_id, &spec, deadline).await {
            Ok(Progress::Complete(bundle)) => {
                let result = self
                    .publish(
                        job_id,
                        &spec,
                        &bundle,
                        event.continuation,
                        earlier + started.elapsed(),
                    )
                    .await?;
                Ok(TrainerOutcome::Finished(Box::new(result)))
            }
            Ok(Progress::OutOfTime { done, total }) => {
                let next = event.continuation + 1;
                if next > self.config.max_continuations {
                    let error = PipelineError::Vision(vision::VisionError::Inference(format!(
                        "the job did not finish within {} continuations ({done} of {total} images extracted); raise MAX_CONTINUATIONS or the trainer's memory (more vCPUs)",
                        self.config.max_continuations
                    )));
                    return self
                        .finish_failed(
                            job_id,
                            Some(spec.dataset.clone()),
                            spec.notify.clone(),
                            &error,
                            event.continuation,
                        )
                        .await;
                }
                let checkpoint = Checkpoint {
                    continuation: next,
                    images_total: total,
                    images_done: done,
                    elapsed_ms: (earlier + started.elapsed()).as_secs_f64() * 1000.0,
                    updated_at: crate::now_rfc3339(),
                };
                self.store
                    .put(
                        results,
                        &layout::checkpoint_key(job_id),
                        serde_json::to_vec_pretty(&checkpoint).unwrap_or_default(),
                        "application/json",
                    )
                    .await?;
                self.launcher.start(job_id, next).await?;
                info!(job_id, next, done, total, "handed over to a new invocation");
                Ok(TrainerOutcome::Continued {
                    continuation: next,
                    images_done: done,
                })
            }
            Err(error) if error.is_transient() => Err(error),
            Err(error) => {
                self.finish_failed(
                    job_id,
                    Some(spec.dataset.clone()),
                    spec.notify.clone(),
                    &error,
                    event.continuation,
                )
                .await
            }
        }
    }

    async fn run(&self, job_id: &str, spec: &JobSpec, deadline: Instant) -> Result<Progress> {
        let backbone = if spec.input_size == self.backbone.preprocessor().input_size() {
            Arc::clone(&self.backbone)
        } else {
            let size = spec.input_size;
            Arc::new(
                tokio::task::spawn_blocking(move || Backbone::from_bytes(BUNDLED_MODEL, size))
                    .await
                    .map_err(join_error)??,
            )
        };
        let entries = self.list_dataset(spec, &backbone).await?;
        let cache_prefix = layout::feature_cache_prefix(
            backbone.sha256(),
            backbone.preprocessor().input_size(),
            &spec.dataset,
        );
        let cached: HashSet<String> = self
            .store
            .list(&self.config.results_bucket, &cache_prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let missing: Vec<&DatasetEntry> = entries
            .iter()
            .filter(|e| !cached.contains(&e.cache_key))
            .collect();
        info!(
            job_id,
            total = entries.len(),
            cached = entries.len() - missing.len(),
            "dataset listed"
        );
        self.report(TrainingProgress::DatasetListed {
            total: entries.len(),
            cached: entries.len() - missing.len(),
        });

        let extraction_started = Instant::now();
        let done_before = entries.len() - missing.len();
        let saved = self
            .extract_missing(&backbone, &missing, done_before, entries.len(), deadline)
            .await?;
        if saved < missing.len() {
            return Ok(Progress::OutOfTime {
                done: done_before + saved,
                total: entries.len(),
            });
        }
        let extraction = extraction_started.elapsed();
        let set = self.read_cache(&entries).await?;
        let config = spec.train_config();
        let extraction_ms = extraction.as_secs_f64() * 1000.0;
        let progress = self.options.progress.clone();
        let bundle = tokio::task::spawn_blocking(move || {
            let mut scored = 0;
            vision::train_bundle(
                &backbone,
                BUNDLED_MODEL,
                &set,
                &config,
                extraction_ms,
                |score| {
                    scored += 1;
                    if let Some(observer) = &progress {
                        (observer.0)(TrainingProgress::PenaltyScored {
                            done: scored,
                            total: config.penalties.len(),
                            cv_accuracy: score.cv_accuracy,
                        });
                    }
                },
            )
        })
        .await
        .map_err(join_error)??;
        Ok(Progress::Complete(Box::new(bundle)))
    }

    /// The spec pinned when the job was accepted; a trainer invoked directly (no upload
    /// trigger, e.g. `sam local invoke`) falls back to `jobs/<id>.json` as it is now.
    async fn accepted_spec(&self, job_id: &str) -> Result<Vec<u8>> {
        let pinned = self
            .store
            .get_if_exists(
                &self.config.results_bucket,
                &layout::accepted_spec_key(job_id),
            )
            .await?;
        match pinned {
            Some(object) => Ok(object.bytes),
            None => Ok(self
                .store
                .get(&self.config.input_bucket, &layout::job_spec_key(job_id))
                .await?
                .bytes),
        }
    }

    /// Time spent by the invocations before this continuation, from the checkpoint (zero when
    /// it cannot be read: it is informational only).
    async fn earlier_invocations(&self, job_id: &str) -> Duration {
        let checkpoint = self
            .store
            .get_if_exists(&self.config.results_bucket, &layout::checkpoint_key(job_id))
            .await;
        match checkpoint {
            Ok(Some(object)) => serde_json::from_slice::<Checkpoint>(&object.bytes)
                .ok()
                .map_or(Duration::ZERO, |c| {
                    Duration::try_from_secs_f64(c.elapsed_ms / 1000.0).unwrap_or_default()
                }),
            _ => Duration::ZERO,
        }
    }

    fn report(&self, progress: TrainingProgress) {
        if let Some(observer) = &self.options.progress {
            (observer.0)(progress);
        }
    }

    async fn list_dataset(&self, spec: &JobSpec, backbone: &Backbone) -> Result<Vec<DatasetEntry>> {
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
                    cache_key: layout::feature_cache_key(
                        backbone.sha256(),
                        backbone.preprocessor().input_size(),
                        &spec.dataset,
                        &object.etag,
                    ),
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

    /// Streams the missing images from S3 into the extraction workers and saves every
    /// `chunk_size` results to the feature cache while the workers go on, so reads and writes
    /// overlap with compute and the workers never wait at a chunk boundary. Stops fetching when
    /// the deadline nears (checked between chunks, after the first). Returns how many images
    /// were extracted and saved; whatever was extracted is saved even when a fetch fails.
    async fn extract_missing(
        &self,
        backbone: &Arc<Backbone>,
        missing: &[&DatasetEntry],
        done_before: usize,
        total: usize,
        deadline: Instant,
    ) -> Result<usize> {
        if missing.is_empty() {
            return Ok(0);
        }
        let chunk_size = self.options.chunk_size.max(1);
        let (item_sender, mut item_receiver) =
            tokio::sync::mpsc::channel::<SourceItem>(2 * self.options.fetch_concurrency.max(1));
        let (result_sender, mut result_receiver) =
            tokio::sync::mpsc::channel::<(usize, Extracted)>(chunk_size);
        let options = ExtractOptions {
            workers: self.options.workers,
            total: Some(missing.len()),
            ..ExtractOptions::default()
        };
        let worker_backbone = Arc::clone(backbone);
        let extraction = tokio::task::spawn_blocking(move || {
            let source = std::iter::from_fn(move || item_receiver.blocking_recv());
            vision::extract_each(&worker_backbone, source, &options, |sequence, extracted| {
                match result_sender.blocking_send((sequence, extracted)) {
                    Ok(()) => ControlFlow::Continue(()),
                    // The saver stopped (a cache write failed): stop extracting.
                    Err(_) => ControlFlow::Break(()),
                }
            })
        });
        let feed = self.feed(missing, item_sender, deadline);
        let save = async {
            let mut saved = 0;
            let mut batch = Vec::with_capacity(chunk_size);
            while let Some((sequence, extracted)) = result_receiver.recv().await {
                // The feed sends `missing` in order, so the sequence indexes it.
                let Some(entry) = missing.get(sequence) else {
                    continue;
                };
                batch.push((*entry, extracted));
                self.report(TrainingProgress::ImageExtracted {
                    done: done_before + saved + batch.len(),
                    total,
                });
                if batch.len() == chunk_size {
                    self.write_cache(&batch).await?;
                    saved += batch.len();
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                self.write_cache(&batch).await?;
                saved += batch.len();
            }
            Ok::<usize, PipelineError>(saved)
        };
        let (fed, saved) = tokio::join!(feed, save);
        let extracted = extraction.await.map_err(join_error)?;
        fed?;
        extracted?;
        saved
    }

    /// Fetches `missing` in order (bounded concurrency) into the extraction's channel. Returns
    /// how many images it handed over, or the first transient S3 error.
    async fn feed(
        &self,
        missing: &[&DatasetEntry],
        items: tokio::sync::mpsc::Sender<SourceItem>,
        deadline: Instant,
    ) -> Result<usize> {
        let chunk_size = self.options.chunk_size.max(1);
        let keys = missing.iter().map(|e| e.key.clone()).collect();
        let mut fetches = Box::pin(self.store.get_many(
            &self.config.input_bucket,
            keys,
            self.options.fetch_concurrency,
        ));
        let mut fed = 0;
        while let Some((key, fetched)) = fetches.next().await {
            // Always make progress: the deadline is checked only after the first chunk.
            if fed >= chunk_size
                && fed % chunk_size == 0
                && Instant::now() + self.options.safety_margin >= deadline
            {
                break;
            }
            let label = missing
                .get(fed)
                .map(|entry| entry.label.clone())
                .unwrap_or_default();
            let item = match fetched {
                Ok(object) => Ok(LabeledImage {
                    key,
                    label,
                    bytes: object.bytes,
                }),
                // Deleted since the listing: nothing to retry, so skip it for good.
                Err(PipelineError::NotFound { .. }) => Err(SourceFailure {
                    key,
                    label,
                    reason: "deleted before it could be read".to_owned(),
                }),
                Err(error) => return Err(error),
            };
            if items.send(item).await.is_err() {
                break;
            }
            fed += 1;
        }
        Ok(fed)
    }

    async fn write_cache(&self, batch: &[(&DatasetEntry, Extracted)]) -> Result<()> {
        let writes = batch.iter().map(|(entry, extracted)| {
            let bytes = match extracted {
                Extracted::Features { features, .. } => {
                    let mut bytes = FEATURES_MAGIC.to_vec();
                    bytes.extend(features.iter().flat_map(|v| v.to_le_bytes()));
                    bytes
                }
                Extracted::Skipped(skipped) => {
                    let mut bytes = SKIPPED_MAGIC.to_vec();
                    bytes.extend(serde_json::to_vec(skipped).unwrap_or_default());
                    bytes
                }
            };
            (entry.cache_key.as_str(), bytes)
        });
        let bucket = &self.config.results_bucket;
        let results: Vec<Result<Option<String>>> = futures::stream::iter(writes)
            .map(|(cache_key, bytes)| async move {
                self.store
                    .put(bucket, cache_key, bytes, "application/octet-stream")
                    .await
            })
            .buffer_unordered(self.options.fetch_concurrency)
            .collect()
            .await;
        results.into_iter().collect::<Result<Vec<_>>>().map(|_| ())
    }

    /// The whole dataset's features from the cache, in key order.
    async fn read_cache(&self, entries: &[DatasetEntry]) -> Result<FeatureSet> {
        let bucket = &self.config.results_bucket;
        let keys: Vec<String> = entries.iter().map(|e| e.cache_key.clone()).collect();
        let mut reads = Box::pin(self.store.get_many(bucket, keys, 16));
        let mut set = FeatureSet::default();
        let mut index = 0;
        while let Some((cache_key, object)) = reads.next().await {
            let entry = &entries[index];
            index += 1;
            let bytes = object?.bytes;
            let (magic, body) = bytes.split_at(bytes.len().min(4));
            if magic == FEATURES_MAGIC && body.len() == FEATURE_LEN * 4 {
                let features: Vec<f32> = body
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                set.push(entry.key.clone(), entry.label.clone(), &features);
            } else if magic == SKIPPED_MAGIC
                && let Ok(skipped) = serde_json::from_slice::<SkippedImage>(body)
            {
                set.skipped.push(skipped);
            } else {
                warn!(%cache_key, "unreadable cache entry");
                return Err(PipelineError::BadDocument {
                    what: "feature cache entry",
                    bucket: bucket.clone(),
                    key: cache_key,
                    reason: "unknown format".to_owned(),
                });
            }
        }
        Ok(set)
    }

    /// Writes the model files, then the result, then points classification at the new model.
    async fn publish(
        &self,
        job_id: &str,
        spec: &JobSpec,
        bundle: &TrainedBundle,
        continuations: u32,
        duration: Duration,
    ) -> Result<JobResult> {
        let bucket = &self.config.results_bucket;
        let files = [
            (
                vision::bundle::ONNX_FILE,
                &bundle.model_onnx,
                "application/octet-stream",
            ),
            (
                vision::bundle::HEAD_FILE,
                &bundle.head_json,
                "application/json",
            ),
            (
                vision::bundle::METRICS_FILE,
                &bundle.metrics_json,
                "application/json",
            ),
        ];
        for (name, bytes, content_type) in files {
            self.store
                .put(
                    bucket,
                    &layout::model_file_key(job_id, name),
                    bytes.clone(),
                    content_type,
                )
                .await?;
        }
        let metrics = &bundle.metrics;
        let result = JobResult {
            job_id: job_id.to_owned(),
            status: JobStatus::Succeeded,
            dataset: Some(spec.dataset.clone()),
            notify: spec.notify.clone(),
            error: None,
            model: Some(ModelInfo {
                prefix: layout::model_prefix(job_id),
                files: files
                    .iter()
                    .map(|(name, _, _)| (*name).to_owned())
                    .collect(),
            }),
            summary: Some(TrainingSummary {
                labels: bundle.head.labels.clone(),
                validation_accuracy: metrics.evaluation.accuracy,
                macro_f1: metrics.evaluation.macro_f1,
                images_train: metrics.images.train,
                images_validation: metrics.images.validation,
                images_skipped: metrics.images.skipped,
                penalty: metrics.chosen_penalty.penalty,
                cv_accuracy: metrics.chosen_penalty.cv_accuracy,
                duration_ms: duration.as_secs_f64() * 1000.0,
            }),
            continuations,
            finished_at: crate::now_rfc3339(),
        };
        if !self.write_result(job_id, &result).await? {
            return Ok(result);
        }
        if let Some(summary) = &result.summary {
            metrics::histogram!(crate::observe::JOB_DURATION_SECONDS)
                .record(summary.duration_ms / 1000.0);
            metrics::histogram!(crate::observe::VALIDATION_ACCURACY)
                .record(summary.validation_accuracy * 100.0);
        }
        let current = CurrentModel {
            model_id: job_id.to_owned(),
            head_key: layout::model_file_key(job_id, vision::bundle::HEAD_FILE),
            updated_at: crate::now_rfc3339(),
        };
        self.store
            .put(
                bucket,
                layout::CURRENT_MODEL_KEY,
                serde_json::to_vec_pretty(&current).unwrap_or_default(),
                "application/json",
            )
            .await?;
        let _ = self
            .store
            .delete(bucket, &layout::checkpoint_key(job_id))
            .await;
        Ok(result)
    }

    async fn finish_failed(
        &self,
        job_id: &str,
        dataset: Option<String>,
        notify: Vec<String>,
        error: &PipelineError,
        continuations: u32,
    ) -> Result<TrainerOutcome> {
        warn!(job_id, %error, "job failed");
        let result = JobResult::failed(job_id, dataset, notify, error, continuations);
        if self.write_result(job_id, &result).await? {
            metrics::counter!(crate::observe::JOBS_FAILED).increment(1);
        }
        Ok(TrainerOutcome::Finished(Box::new(result)))
    }

    /// Writes `results/<id>.json` once; `false` when another invocation already had.
    async fn write_result(&self, job_id: &str, result: &JobResult) -> Result<bool> {
        let bytes = serde_json::to_vec_pretty(result).unwrap_or_default();
        self.store
            .put_if_absent(
                &self.config.results_bucket,
                &layout::result_key(job_id),
                bytes,
                "application/json",
            )
            .await
    }
}

fn join_error(error: tokio::task::JoinError) -> PipelineError {
    PipelineError::Vision(vision::VisionError::Inference(format!(
        "a worker task failed: {error}"
    )))
}
