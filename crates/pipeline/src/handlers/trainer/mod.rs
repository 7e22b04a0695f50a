//! The trainer function: one training job, resumable. Features are cached per dataset object
//! (keyed by backbone, input size and ETag), so the cache *is* the checkpoint: a job that is
//! cut off, retried or continued redoes no image and counts none twice.

mod dataset;
mod feature_cache;
mod feed;
mod lease;
mod misclassified;
pub mod promotion;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vision::{BUNDLED_MODEL, Backbone, FeatureSet, TrainedBundle};

use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::documents::{
    Checkpoint, JobResult, JobSpec, JobStatus, MISCLASSIFIED_FILE, ModelInfo, TRAINED_ON_FILE,
    TrainedOn, TrainingSummary,
};
use crate::error::{PipelineError, Result};
use crate::launcher::{TrainerEvent, TrainerLauncher};
use crate::layout;
use crate::observe;
use crate::store::{JSON_CONTENT_TYPE, S3Store};
use dataset::DatasetEntry;

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
    /// Another invocation holds the job (a duplicate delivery or a second direct invoke, or a
    /// late one for a continuation the job has moved past): nothing extracted, nothing written.
    AlreadyRunning,
}

/// The holder id of invocations made outside Lambda (the demo, the tests), which have no
/// request id: every such call counts as a retry of one invocation.
pub const LOCAL_INVOCATION: &str = "local";

pub struct Trainer {
    config: Config,
    store: S3Store,
    launcher: Arc<dyn TrainerLauncher>,
    backbone: Arc<Backbone>,
    options: TrainerOptions,
}

enum Progress {
    Complete(Box<Trained>),
    OutOfTime { done: usize, total: usize },
}

/// A finished training run with what it was trained on: the champion is scored on the same
/// features.
struct Trained {
    bundle: TrainedBundle,
    set: FeatureSet,
    backbone: Arc<Backbone>,
    /// The extracted version of each dataset key: its ETag and size.
    versions: HashMap<String, (String, u64)>,
}

impl Trained {
    /// The ETags of the image versions the shipped head was fitted on: every row when it was
    /// refitted with the validation split, else the training split.
    fn trained_on(&self) -> TrainedOn {
        let held_out: HashSet<usize> = if self.bundle.metrics.refitted_with_validation
            || self.bundle.metrics.evaluated_on != "validation"
        {
            HashSet::new()
        } else {
            self.bundle.evaluated_rows.iter().copied().collect()
        };
        let mut etags: Vec<String> = (0..self.set.len())
            .filter(|row| !held_out.contains(row))
            .filter_map(|row| self.versions.get(&self.set.keys[row]))
            .map(|(etag, _)| etag.clone())
            .collect();
        etags.sort();
        etags.dedup();
        TrainedOn { etags }
    }
}

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

    /// [`Trainer::handle_invocation`] for a call from outside Lambda ([`LOCAL_INVOCATION`]).
    pub async fn handle(&self, event: &TrainerEvent, deadline: Instant) -> Result<TrainerOutcome> {
        self.handle_invocation(event, deadline, LOCAL_INVOCATION)
            .await
    }

    /// Runs (or continues) the job until it finishes or `deadline` − safety margin is reached,
    /// if this invocation (Lambda request id `invocation`) can take the job's lease. Transient
    /// AWS failures return `Err` so Lambda retries the invocation (same request id), which
    /// resumes from the cache; every other failure ends the job with a failed result.
    pub async fn handle_invocation(
        &self,
        event: &TrainerEvent,
        deadline: Instant,
        invocation: &str,
    ) -> Result<TrainerOutcome> {
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
        if !self
            .take_lease(job_id, event.continuation, invocation, deadline)
            .await?
        {
            info!(job_id, invocation, "another invocation holds the job");
            return Ok(TrainerOutcome::AlreadyRunning);
        }
        let spec = match self.accepted_spec(job_id).await {
            Ok(spec) => spec,
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => {
                let failed =
                    JobResult::failed(job_id, None, Vec::new(), &error, event.continuation);
                return self.finish_failed(failed, &error).await;
            }
        };
        let earlier = if event.continuation == 0 {
            Duration::ZERO
        } else {
            self.earlier_invocations(job_id).await
        };
        let elapsed = || earlier + started.elapsed();
        let failed = |error: &PipelineError| {
            JobResult::failed(
                job_id,
                Some(spec.dataset.clone()),
                spec.notify.clone(),
                error,
                event.continuation,
            )
        };
        match self.run(job_id, &spec, deadline).await {
            Ok(Progress::Complete(trained)) => {
                let result = self
                    .publish(job_id, &spec, &trained, event.continuation, elapsed())
                    .await?;
                Ok(TrainerOutcome::Finished(Box::new(result)))
            }
            Ok(Progress::OutOfTime { done, total }) => {
                let next = event.continuation + 1;
                if next > self.config.max_continuations {
                    let error = PipelineError::ContinuationLimit {
                        limit: self.config.max_continuations,
                        done,
                        total,
                    };
                    return self.finish_failed(failed(&error), &error).await;
                }
                let checkpoint = Checkpoint {
                    continuation: next,
                    images_total: total,
                    images_done: done,
                    elapsed_ms: elapsed().as_secs_f64() * 1000.0,
                    updated_at: now_rfc3339(),
                };
                self.hand_over(job_id, &checkpoint).await
            }
            Err(error) if error.is_transient() => Err(error),
            Err(error) => self.finish_failed(failed(&error), &error).await,
        }
    }

    /// Saves `checkpoint` and starts the next invocation, which resumes from the cache.
    async fn hand_over(&self, job_id: &str, checkpoint: &Checkpoint) -> Result<TrainerOutcome> {
        self.store
            .put_json(
                &self.config.results_bucket,
                &layout::checkpoint_key(job_id),
                checkpoint,
            )
            .await?;
        let next = checkpoint.continuation;
        self.launcher.start(job_id, next).await?;
        let (done, total) = (checkpoint.images_done, checkpoint.images_total);
        info!(job_id, next, done, total, "handed over to a new invocation");
        Ok(TrainerOutcome::Continued {
            continuation: next,
            images_done: done,
        })
    }

    async fn run(&self, job_id: &str, spec: &JobSpec, deadline: Instant) -> Result<Progress> {
        let backbone = if spec.input_size == self.backbone.preprocessor().input_size() {
            Arc::clone(&self.backbone)
        } else {
            let size = spec.input_size;
            Arc::new(
                tokio::task::spawn_blocking(move || Backbone::from_bytes(BUNDLED_MODEL, size))
                    .await??,
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
        let set = feature_cache::read(&self.store, &self.config.results_bucket, &entries).await?;
        let versions: HashMap<String, (String, u64)> = entries
            .into_iter()
            .map(|e| (e.key, (e.etag, e.size)))
            .collect();
        let config = spec.train_config();
        let extraction_ms = extraction.as_secs_f64() * 1000.0;
        let progress = self.options.progress.clone();
        let trained = tokio::task::spawn_blocking(move || {
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
            .map(|bundle| Trained {
                bundle,
                set,
                backbone,
                versions,
            })
        })
        .await??;
        Ok(Progress::Complete(Box::new(trained)))
    }

    /// The spec pinned when the job was accepted; a trainer invoked directly (no upload
    /// trigger, e.g. `sam local invoke`) falls back to `jobs/<id>.json` as it is now.
    async fn accepted_spec(&self, job_id: &str) -> Result<JobSpec> {
        match super::job_spec_bytes(&self.store, &self.config, job_id).await? {
            Some(bytes) => JobSpec::parse(&bytes),
            None => Err(PipelineError::NotFound {
                bucket: self.config.input_bucket.clone(),
                key: layout::job_spec_key(job_id),
            }),
        }
    }

    /// Time spent by the invocations before this continuation, from the checkpoint (zero when
    /// it cannot be read: it is informational only).
    async fn earlier_invocations(&self, job_id: &str) -> Duration {
        let checkpoint = self
            .store
            .get_json_lenient::<Checkpoint>(
                &self.config.results_bucket,
                &layout::checkpoint_key(job_id),
            )
            .await;
        match checkpoint {
            Ok(Some(stored)) => stored.document.map_or(Duration::ZERO, |c| {
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

    /// Writes the model files, decides whether the model serves (champion vs challenger), then
    /// writes the result, which triggers the email.
    async fn publish(
        &self,
        job_id: &str,
        spec: &JobSpec,
        trained: &Trained,
        continuations: u32,
        duration: Duration,
    ) -> Result<JobResult> {
        let bucket = &self.config.results_bucket;
        let bundle = &trained.bundle;
        let mut files = Vec::new();
        for (name, bytes, content_type) in model_files(bundle) {
            let key = layout::model_file_key(job_id, name);
            self.store
                .put(bucket, &key, bytes.to_vec(), content_type)
                .await?;
            files.push(name.to_owned());
        }
        let trained_on_key = layout::model_file_key(job_id, TRAINED_ON_FILE);
        self.store
            .put_json(bucket, &trained_on_key, &trained.trained_on())
            .await?;
        files.push(TRAINED_ON_FILE.to_owned());
        misclassified::write(
            &self.store,
            &self.config.input_bucket,
            bucket,
            job_id,
            (&bundle.evaluated, &trained.versions),
        )
        .await?;
        let promotion =
            match promotion::promote(&self.store, bucket, job_id, spec.promote, trained).await {
                Ok(promotion) => promotion,
                Err(error) if error.is_transient() => return Err(error),
                // The model trained fine: a pointer that cannot be read or changed keeps it out of
                // service, not out of the bucket, and the result says why.
                Err(error) => promotion::not_decided(job_id, spec.promote, bundle, &error),
            };
        info!(job_id, promoted = promotion.promoted, reason = %promotion.reason, "promotion decided");
        files.push(MISCLASSIFIED_FILE.to_owned());
        let result = JobResult {
            job_id: job_id.to_owned(),
            status: JobStatus::Succeeded,
            dataset: Some(spec.dataset.clone()),
            notify: spec.notify.clone(),
            error: None,
            model: Some(ModelInfo {
                prefix: layout::model_prefix(job_id),
                files,
            }),
            summary: Some(summary(bundle, duration)),
            promotion: Some(promotion),
            continuations,
            finished_at: now_rfc3339(),
        };
        if !self.write_result(job_id, &result).await? {
            return Ok(result);
        }
        if let Some(summary) = &result.summary {
            metrics::histogram!(observe::JOB_DURATION_SECONDS).record(summary.duration_ms / 1000.0);
            metrics::histogram!(observe::VALIDATION_ACCURACY)
                .record(summary.validation_accuracy * 100.0);
        }
        let _ = self
            .store
            .delete(bucket, &layout::checkpoint_key(job_id))
            .await;
        Ok(result)
    }

    async fn finish_failed(
        &self,
        result: JobResult,
        error: &PipelineError,
    ) -> Result<TrainerOutcome> {
        warn!(job_id = %result.job_id, %error, "job failed");
        if self.write_result(&result.job_id, &result).await? {
            metrics::counter!(observe::JOBS_FAILED).increment(1);
        }
        Ok(TrainerOutcome::Finished(Box::new(result)))
    }

    /// Writes `results/<id>.json` once; `false` when another invocation already had.
    async fn write_result(&self, job_id: &str, result: &JobResult) -> Result<bool> {
        self.store
            .put_json_if_absent(
                &self.config.results_bucket,
                &layout::result_key(job_id),
                result,
            )
            .await
    }
}

/// The model's files under `models/<id>/`: name, bytes, content type.
fn model_files(bundle: &TrainedBundle) -> [(&'static str, &[u8], &'static str); 4] {
    use vision::bundle::{EVALUATION_FILE, HEAD_FILE, METRICS_FILE, ONNX_FILE};
    [
        (ONNX_FILE, &bundle.model_onnx, "application/octet-stream"),
        (HEAD_FILE, &bundle.head_json, JSON_CONTENT_TYPE),
        (METRICS_FILE, &bundle.metrics_json, JSON_CONTENT_TYPE),
        (
            EVALUATION_FILE,
            &bundle.evaluation_jsonl,
            "application/x-ndjson",
        ),
    ]
}

/// The figures of a finished job that its result document and email show.
fn summary(bundle: &TrainedBundle, duration: Duration) -> TrainingSummary {
    let metrics = &bundle.metrics;
    TrainingSummary {
        labels: bundle.head.labels.clone(),
        validation_accuracy: metrics.evaluation.accuracy,
        macro_f1: metrics.evaluation.macro_f1,
        images_train: metrics.images.train,
        images_validation: metrics.images.validation,
        images_skipped: metrics.images.skipped,
        penalty: metrics.chosen_penalty.penalty,
        cv_accuracy: metrics.chosen_penalty.cv_accuracy,
        duration_ms: duration.as_secs_f64() * 1000.0,
    }
}
