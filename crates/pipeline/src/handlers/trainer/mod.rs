//! The trainer function: one training job, resumable. Features are cached per dataset object
//! version (packed, found by backbone, input size and ETag), so the cache *is* the checkpoint:
//! a job that is cut off, retried or continued redoes no image and counts none twice. A job
//! bigger than `MAP_THRESHOLD_IMAGES` is handed to the training state machine, whose steps
//! (`steps.rs`) run in this same function.

mod dataset;
mod feature_cache;
mod feed;
mod lease;
mod misclassified;
pub mod promotion;
mod publish;
mod reclassify;
mod steps;

pub use steps::{ManifestLocation, MapStep, StepError, StepOutput, TrainerInput};

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;
use vision::{BUNDLED_MODEL, Backbone, FeatureSet, TrainedBundle};

use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::documents::{Checkpoint, ClassifySpec, JobRequest, JobResult, JobSpec, TrainedOn};
use crate::error::{PipelineError, Result};
use crate::launcher::{StateMachineLauncher, TrainerEvent, TrainerLauncher};
use crate::layout;
use crate::store::S3Store;
use dataset::DatasetEntry;
use feature_cache::FeatureCache;

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
    /// A dataset with more images fails its job up front, on either path: the head is trained
    /// in one Lambda from features held in memory, and past this its final fits would outrun
    /// one invocation (see docs/performance.md).
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
            max_dataset_images: 500_000,
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
    /// The dataset is bigger than `MAP_THRESHOLD_IMAGES`: the job's state machine execution
    /// was started and runs it from here.
    HandedToStateMachine { images: usize },
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
    state_machine: Option<Arc<StateMachineLauncher>>,
}

enum Progress {
    Complete(Box<Trained>),
    OutOfTime { done: usize, total: usize },
    HandedToStateMachine { images: usize },
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
            state_machine: None,
        }
    }

    /// Big datasets (over `Config::map_threshold_images`) go to this state machine.
    pub fn with_state_machine(mut self, launcher: Arc<StateMachineLauncher>) -> Self {
        self.state_machine = Some(launcher);
        self
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
        let job_id = event.job_id.as_str();
        if self.has_result(job_id).await? {
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
            Ok(JobRequest::Train(spec)) => spec,
            Ok(JobRequest::Classify(spec)) => return self.hand_classification(job_id, &spec).await,
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
            Ok(Progress::HandedToStateMachine { images }) => {
                info!(job_id, images, "handed to the training state machine");
                Ok(TrainerOutcome::HandedToStateMachine { images })
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

    /// A reclassification runs on the state machine whatever its size: its images are listed
    /// (so an empty or oversized prefix fails here) and its execution started. Without a
    /// state machine (a trainer run outside the stack) the job fails saying so.
    async fn hand_classification(
        &self,
        job_id: &str,
        spec: &ClassifySpec,
    ) -> Result<TrainerOutcome> {
        let started = match (&self.state_machine, self.list_prefix(spec).await) {
            (_, Err(error)) => Err(error),
            (Some(state_machine), Ok(images)) => {
                state_machine.start(job_id).await.map(|()| images.len())
            }
            (None, Ok(_)) => Err(PipelineError::MissingConfig {
                name: "STATE_MACHINE_ARN",
                hint: "a reclassification (`classify` in the spec) runs on the stack's training state machine; deploy template.yaml, which gives the trainer its ARN",
            }),
        };
        match started {
            Ok(images) => {
                info!(
                    job_id,
                    images, "reclassification handed to the state machine"
                );
                Ok(TrainerOutcome::HandedToStateMachine { images })
            }
            Err(error) if error.is_transient() => Err(error),
            Err(error) => {
                let mut failed = JobResult::failed(job_id, None, spec.notify.clone(), &error, 0);
                failed.prefix = Some(spec.classify.prefix.clone());
                self.finish_failed(failed, &error).await
            }
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
        let backbone = self.backbone_for(spec.input_size).await?;
        let entries = self.list_dataset(spec).await?;
        if let Some(state_machine) = &self.state_machine
            && entries.len() > self.config.map_threshold_images
        {
            state_machine.start(job_id).await?;
            return Ok(Progress::HandedToStateMachine {
                images: entries.len(),
            });
        }
        let cache = self.cache_for(&backbone, &spec.dataset);
        let mut index = cache.index().await?;
        let missing: Vec<&DatasetEntry> = entries
            .iter()
            .filter(|e| !index.contains(&e.etag))
            .collect();
        let done_before = entries.len() - missing.len();
        info!(
            job_id,
            total = entries.len(),
            cached = done_before,
            "dataset listed"
        );
        self.report(TrainingProgress::DatasetListed {
            total: entries.len(),
            cached: done_before,
        });

        let extraction_started = Instant::now();
        let saved = self
            .extract_missing(
                &backbone,
                &cache,
                &missing,
                (done_before, entries.len()),
                self.options.chunk_size,
                deadline,
            )
            .await?;
        saved.packs.iter().for_each(|pack| index.add(pack));
        if saved.images < missing.len() {
            return Ok(Progress::OutOfTime {
                done: done_before + saved.images,
                total: entries.len(),
            });
        }
        let extraction_ms = extraction_started.elapsed().as_secs_f64() * 1000.0;
        let set = cache.read(&index, &entries).await?;
        let trained = self
            .train(backbone, set, entries, spec, extraction_ms)
            .await?;
        Ok(Progress::Complete(Box::new(trained)))
    }

    /// The backbone for a job's input size: the one loaded at cold start, or another compiled
    /// for this job.
    async fn backbone_for(&self, input_size: u32) -> Result<Arc<Backbone>> {
        crate::loading::backbone_at(Arc::clone(&self.backbone), input_size).await
    }

    fn cache_for<'s>(&'s self, backbone: &Backbone, dataset: &str) -> FeatureCache<'s> {
        FeatureCache::new(
            &self.store,
            &self.config.results_bucket,
            layout::feature_cache_prefix(
                backbone.sha256(),
                backbone.preprocessor().input_size(),
                dataset,
            ),
        )
    }

    /// Trains the head on a blocking thread, reporting each scored penalty.
    async fn train(
        &self,
        backbone: Arc<Backbone>,
        set: FeatureSet,
        entries: Vec<DatasetEntry>,
        spec: &JobSpec,
        extraction_ms: f64,
    ) -> Result<Trained> {
        let versions: HashMap<String, (String, u64)> = entries
            .into_iter()
            .map(|e| (e.key, (e.etag, e.size)))
            .collect();
        let config = spec.train_config();
        let progress = self.options.progress.clone();
        tokio::task::spawn_blocking(move || {
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
        .await?
        .map_err(PipelineError::from)
    }

    /// The spec pinned when the job was accepted; a trainer invoked directly (no upload
    /// trigger, e.g. `sam local invoke`) falls back to `jobs/<id>.json` as it is now.
    async fn accepted_spec(&self, job_id: &str) -> Result<JobRequest> {
        match super::job_spec_bytes(&self.store, &self.config, job_id).await? {
            Some(bytes) => JobRequest::parse(&bytes),
            None => Err(PipelineError::NotFound {
                bucket: self.config.input_bucket.clone(),
                key: layout::job_spec_key(job_id),
            }),
        }
    }

    /// Whether the job (a safe id) already has its result: then there is nothing to do.
    async fn has_result(&self, job_id: &str) -> Result<bool> {
        layout::validate_id("job id", job_id)?;
        Ok(self
            .store
            .get_if_exists(&self.config.results_bucket, &layout::result_key(job_id))
            .await?
            .is_some())
    }

    /// The job's checkpoint, or `None` when it is absent or cannot be read: it only feeds the
    /// duration figure, so it never fails a job.
    async fn checkpoint(&self, job_id: &str) -> Option<Checkpoint> {
        self.store
            .get_json_lenient::<Checkpoint>(
                &self.config.results_bucket,
                &layout::checkpoint_key(job_id),
            )
            .await
            .ok()
            .flatten()
            .and_then(|stored| stored.document)
    }

    /// Time spent by the invocations before this continuation, from the checkpoint.
    async fn earlier_invocations(&self, job_id: &str) -> Duration {
        self.checkpoint(job_id)
            .await
            .and_then(|c| Duration::try_from_secs_f64(c.elapsed_ms / 1000.0).ok())
            .unwrap_or_default()
    }

    fn report(&self, progress: TrainingProgress) {
        if let Some(observer) = &self.options.progress {
            (observer.0)(progress);
        }
    }
}
