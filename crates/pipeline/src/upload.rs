//! The upload-trigger function: `images/**` → a prediction; `jobs/<id>.json` → a training job.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{Instrument, info, warn};
use vision::{Backbone, Classifier, DecodeLimits, HeadDocument, Prediction};

use crate::config::Config;
use crate::error::{PipelineError, Result};
use crate::event::{CreatedObject, S3Event, created_objects};
use crate::job::{ErrorInfo, JobResult, JobSpec, JobStatus};
use crate::launcher::TrainerLauncher;
use crate::layout::{self, InputKey};
use crate::loading::BackboneLoader;
use crate::store::S3Store;

/// How many classes a prediction lists.
pub const TOP_K: usize = 5;

/// What `models/current.json` says: which trained model classification uses now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentModel {
    pub model_id: String,
    /// Key of the model's `head.json` in the results bucket.
    pub head_key: String,
    pub updated_at: String,
}

/// `predictions/<path>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionDocument {
    /// `images/<path>` in the input bucket.
    pub source_key: String,
    /// The ETag of the image version this prediction is for.
    pub source_etag: Option<String>,
    /// `imagenet` or the job id of the trained model.
    pub model_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<Prediction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings_ms: Option<vision::Timings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// Per-container state: clients, the backbone (loaded once) and the current classifier, cached
/// until `models/current.json` changes.
pub struct UploadTrigger {
    config: Config,
    store: S3Store,
    launcher: Arc<dyn TrainerLauncher>,
    backbone: BackboneLoader,
    limits: DecodeLimits,
    current: Mutex<Option<(Option<String>, String, Classifier)>>,
}

/// What happened to one record, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Predicted { key: String, model_id: String },
    ImageRejected { key: String, kind: String },
    AlreadyPredicted { key: String },
    JobStarted { job_id: String },
    JobAlreadyStarted { job_id: String },
    JobRejected { job_id: String },
    JobAlreadyFinished { job_id: String },
    Ignored { key: String },
}

impl UploadTrigger {
    pub fn new(
        config: Config,
        store: S3Store,
        launcher: Arc<dyn TrainerLauncher>,
        backbone: impl Into<BackboneLoader>,
    ) -> Self {
        UploadTrigger {
            config,
            store,
            launcher,
            backbone: backbone.into(),
            limits: DecodeLimits::default(),
            current: Mutex::new(None),
        }
    }

    /// Handles every record independently: a bad image or spec is recorded in S3 and does not
    /// fail its neighbours; a transient AWS error fails the event so Lambda retries it (the
    /// records already done are idempotent).
    pub async fn handle(&self, event: &S3Event) -> Result<Vec<RecordOutcome>> {
        let mut outcomes = Vec::new();
        let mut transient = None;
        for object in created_objects(event) {
            let object = match object {
                Ok(object) => object,
                Err(reason) => {
                    warn!(%reason, "skipping a record that names no usable object");
                    continue;
                }
            };
            // One span per record: every log line of it carries the bucket and key (and, in
            // Lambda, the runtime's enclosing span carries the request id).
            let span = tracing::info_span!("record", bucket = %object.bucket, key = %object.key);
            let result = self.handle_object(&object).instrument(span.clone()).await;
            let _entered = span.enter();
            match result {
                Ok(outcome) => {
                    info!(?outcome, "record handled");
                    outcomes.push(outcome);
                }
                Err(error) => {
                    warn!(%error, "record failed; the event will be retried");
                    transient = Some(error);
                }
            }
        }
        match transient {
            Some(error) => Err(error),
            None => Ok(outcomes),
        }
    }

    async fn handle_object(&self, object: &CreatedObject) -> Result<RecordOutcome> {
        if object.bucket != self.config.input_bucket {
            return Ok(RecordOutcome::Ignored {
                key: object.key.clone(),
            });
        }
        match InputKey::parse(&object.key) {
            Ok(InputKey::Image { path }) => self.classify(object, &path).await,
            Ok(InputKey::JobSpec { job_id }) => self.start_job(object, &job_id).await,
            Ok(InputKey::Other) => Ok(RecordOutcome::Ignored {
                key: object.key.clone(),
            }),
            Err(error) => {
                warn!(key = %object.key, %error, "job spec with an unsafe name ignored");
                Ok(RecordOutcome::Ignored {
                    key: object.key.clone(),
                })
            }
        }
    }

    async fn classify(&self, object: &CreatedObject, path: &str) -> Result<RecordOutcome> {
        let prediction_key = layout::prediction_key(path);
        let bucket = &self.config.results_bucket;
        // Refuse oversized objects from the event alone, without downloading them.
        let too_big = object.size.map(|size| self.limits.check_encoded_len(size));
        let fetch_image = async {
            match too_big {
                Some(Err(_)) => Ok(None),
                _ => self
                    .store
                    .get(&self.config.input_bucket, &object.key)
                    .await
                    .map(Some),
            }
        };
        // Three independent round trips at once (a duplicate event wastes the image GET).
        let (existing, current, image) = tokio::join!(
            self.store.get_if_exists(bucket, &prediction_key),
            self.current_classifier(),
            fetch_image
        );
        let existing = existing?;
        if let Some(existing) = &existing
            && let Ok(document) = serde_json::from_slice::<PredictionDocument>(&existing.bytes)
            && document.source_etag.is_some()
            && document.source_etag == object.etag.as_deref().map(unquote)
        {
            return Ok(RecordOutcome::AlreadyPredicted {
                key: object.key.clone(),
            });
        }

        let (model_id, classifier) = current?;
        let mut document = PredictionDocument {
            source_key: object.key.clone(),
            source_etag: object.etag.as_deref().map(unquote),
            model_id: model_id.clone(),
            top: Vec::new(),
            width: None,
            height: None,
            timings_ms: None,
            error: None,
        };
        let result = match (too_big, image?) {
            (Some(Err(error)), _) => Err(error),
            (_, Some(image)) => {
                if document.source_etag.is_none() {
                    document.source_etag = image.etag.as_deref().map(unquote);
                }
                let limits = self.limits.clone();
                tokio::task::spawn_blocking(move || {
                    classifier.classify(&image.bytes, &limits, TOP_K)
                })
                .await
                .map_err(|e| PipelineError::Vision(vision::VisionError::Inference(e.to_string())))?
            }
            (_, None) => {
                return Err(PipelineError::Vision(vision::VisionError::Inference(
                    "the image was neither fetched nor refused".to_owned(),
                )));
            }
        };
        let outcome = match result {
            Ok(classification) => {
                metrics::counter!(crate::observe::IMAGES_CLASSIFIED).increment(1);
                let timings = &classification.timings;
                metrics::histogram!(crate::observe::INFERENCE_MS).record(timings.inference_ms);
                metrics::histogram!(crate::observe::CLASSIFY_MS)
                    .record(timings.decode_ms + timings.preprocess_ms + timings.inference_ms);
                document.top = classification.top;
                document.width = Some(classification.width);
                document.height = Some(classification.height);
                document.timings_ms = Some(classification.timings);
                RecordOutcome::Predicted {
                    key: object.key.clone(),
                    model_id,
                }
            }
            Err(error) if error.is_bad_image() => {
                metrics::counter!(crate::observe::IMAGE_ERRORS).increment(1);
                document.error = Some(ErrorInfo {
                    kind: error.kind().to_owned(),
                    message: error.to_string(),
                });
                RecordOutcome::ImageRejected {
                    key: object.key.clone(),
                    kind: error.kind().to_owned(),
                }
            }
            Err(error) => return Err(error.into()),
        };
        let bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
        // One write per object version: a concurrent duplicate loses the conditional write.
        let written = match existing.and_then(|e| e.etag) {
            Some(etag) => {
                self.store
                    .put_if_match(bucket, &prediction_key, bytes, "application/json", &etag)
                    .await?
            }
            None => {
                self.store
                    .put_if_absent(bucket, &prediction_key, bytes, "application/json")
                    .await?
            }
        };
        Ok(if written {
            outcome
        } else {
            RecordOutcome::AlreadyPredicted {
                key: object.key.clone(),
            }
        })
    }

    /// The classifier `models/current.json` names, reloaded only when that object changes.
    async fn current_classifier(&self) -> Result<(String, Classifier)> {
        let bucket = &self.config.results_bucket;
        let current = self
            .store
            .get_if_exists(bucket, layout::CURRENT_MODEL_KEY)
            .await?;
        let etag = current.as_ref().and_then(|c| c.etag.clone());
        let mut cache = self.current.lock().await;
        if let Some((cached_etag, model_id, classifier)) = cache.as_ref()
            && *cached_etag == etag
        {
            return Ok((model_id.clone(), classifier.clone()));
        }
        let (model_id, classifier) = match current {
            None => (
                "imagenet".to_owned(),
                Classifier::imagenet(self.backbone.get().await?),
            ),
            Some(object) => {
                let pointer: CurrentModel = parse_json(
                    "models/current.json",
                    bucket,
                    layout::CURRENT_MODEL_KEY,
                    &object.bytes,
                )?;
                let head_object = self.store.get(bucket, &pointer.head_key).await?;
                let document: HeadDocument =
                    parse_json("head.json", bucket, &pointer.head_key, &head_object.bytes)?;
                // A head trained at another input size needs the backbone planned for that
                // size: built once per model change, like the classifier itself.
                let loaded = self.backbone.get().await?;
                let backbone = if document.input_size == loaded.preprocessor().input_size() {
                    loaded
                } else {
                    let size = document.input_size;
                    Arc::new(
                        tokio::task::spawn_blocking(move || {
                            Backbone::from_bytes(vision::BUNDLED_MODEL, size)
                        })
                        .await
                        .map_err(|e| {
                            PipelineError::Vision(vision::VisionError::Inference(e.to_string()))
                        })??,
                    )
                };
                let head = document.head_for(&backbone)?;
                (pointer.model_id, Classifier::with_head(backbone, head))
            }
        };
        info!(%model_id, "classification model loaded");
        *cache = Some((etag, model_id.clone(), classifier.clone()));
        Ok((model_id, classifier))
    }

    async fn start_job(&self, object: &CreatedObject, job_id: &str) -> Result<RecordOutcome> {
        let bucket = &self.config.results_bucket;
        let result_key = layout::result_key(job_id);
        if self
            .store
            .get_if_exists(bucket, &result_key)
            .await?
            .is_some()
        {
            return Ok(RecordOutcome::JobAlreadyFinished {
                job_id: job_id.to_owned(),
            });
        }
        let spec = self
            .store
            .get(&self.config.input_bucket, &object.key)
            .await?;
        match JobSpec::parse(&spec.bytes) {
            Ok(_) => {
                // The GET above returned the newest version of the spec, whichever event this
                // is; the first event to claim the job pins that version. Duplicates and older
                // events arriving late find the claim and start nothing.
                let claim = layout::accepted_spec_key(job_id);
                if !self
                    .store
                    .put_if_absent(bucket, &claim, spec.bytes, "application/json")
                    .await?
                {
                    return Ok(RecordOutcome::JobAlreadyStarted {
                        job_id: job_id.to_owned(),
                    });
                }
                if let Err(error) = self.launcher.start(job_id, 0).await {
                    // Release the claim so Lambda's retry of this event can start the job.
                    let _ = self.store.delete(bucket, &claim).await;
                    return Err(error);
                }
                Ok(RecordOutcome::JobStarted {
                    job_id: job_id.to_owned(),
                })
            }
            Err(error) => {
                // Tell the owner, if the spec says who that is, why the job never ran.
                let notify = serde_json::from_slice::<serde_json::Value>(&spec.bytes)
                    .ok()
                    .and_then(|v| v.get("notify").cloned())
                    .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
                    .map(|list| {
                        list.into_iter()
                            .filter(|a| crate::job::is_plausible_address(a))
                            .take(crate::job::MAX_RECIPIENTS)
                            .collect()
                    })
                    .unwrap_or_default();
                let result = JobResult::failed(job_id, None, notify, &error, 0);
                let bytes = serde_json::to_vec_pretty(&result).unwrap_or_default();
                self.store
                    .put_if_absent(bucket, &result_key, bytes, "application/json")
                    .await?;
                Ok(RecordOutcome::JobRejected {
                    job_id: job_id.to_owned(),
                })
            }
        }
    }
}

/// ETags arrive quoted from S3 responses and bare in S3 events; store them bare.
fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bucket: &str,
    key: &str,
    bytes: &[u8],
) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| PipelineError::BadDocument {
        what,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
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
        JobResult {
            job_id: job_id.to_owned(),
            status: JobStatus::Failed,
            dataset,
            notify,
            error: Some(ErrorInfo {
                kind: error.kind().to_owned(),
                message: error.to_string(),
            }),
            model: None,
            summary: None,
            continuations,
            finished_at: crate::now_rfc3339(),
        }
    }
}
