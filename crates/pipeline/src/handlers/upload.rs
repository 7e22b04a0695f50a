//! The upload-trigger function: `images/**` → a prediction; `jobs/<id>.json` → a training job.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Mutex;
use tracing::{info, warn};
use vision::{Classifier, DecodeLimits, VisionError};

use crate::config::Config;
use crate::documents::{CurrentModel, IMAGENET_MODEL, JobRequest, JobResult, NO_MODEL};
use crate::error::{PipelineError, Result};
use crate::event::{CreatedObject, S3Event, unquote};
use crate::launcher::TrainerLauncher;
use crate::layout::{self, InputKey};
use crate::loading::BackboneLoader;
use crate::predictions::{
    PredictionWrite, Replacing, classify_image, load_classifier, prediction_document,
    record_metrics, store_prediction,
};
use crate::store::{JSON_CONTENT_TYPE, Object, S3Store};

/// Per-container state: clients, the backbone (loaded once) and the current classifier, cached
/// until `models/current.json` changes (which is read again after `Config::model_cache`).
pub struct UploadTrigger {
    config: Config,
    store: S3Store,
    launcher: Arc<dyn TrainerLauncher>,
    backbone: BackboneLoader,
    limits: DecodeLimits,
    current: Mutex<Option<CachedClassifier>>,
}

/// The classifier of one version of `models/current.json` (`etag` `None`: no such object).
struct CachedClassifier {
    etag: Option<String>,
    model_id: String,
    classifier: Classifier,
    /// When `models/current.json` was last read and found to be this version.
    checked: Instant,
}

/// What happened to one record, for logs, metrics and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Predicted {
        key: String,
        model_id: String,
    },
    ImageRejected {
        key: String,
        kind: String,
    },
    AlreadyPredicted {
        key: String,
    },
    /// The event's image version was replaced before it could be read; the newer version's
    /// own event classifies it.
    Superseded {
        key: String,
    },
    JobStarted {
        job_id: String,
    },
    JobAlreadyStarted {
        job_id: String,
    },
    JobRejected {
        job_id: String,
    },
    JobAlreadyFinished {
        job_id: String,
    },
    Ignored {
        key: String,
    },
}

/// What became of the image the event announced.
enum Fetched {
    Image(Object),
    /// Refused from the event alone (its size), without downloading it.
    Refused(VisionError),
    /// A newer version replaced it before the GET.
    Superseded,
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
        super::for_each_record(
            event,
            |object| async move { self.handle_object(&object).await },
        )
        .await
    }

    async fn handle_object(&self, object: &CreatedObject) -> Result<RecordOutcome> {
        let ignored = || RecordOutcome::Ignored {
            key: object.key.clone(),
        };
        if object.bucket != self.config.input_bucket {
            return Ok(ignored());
        }
        match InputKey::parse(&object.key) {
            Ok(InputKey::Image { path }) => self.classify(object, &path).await,
            Ok(InputKey::JobSpec { job_id }) => self.start_job(object, &job_id).await,
            Ok(InputKey::Other) => Ok(ignored()),
            Err(error) => {
                warn!(key = %object.key, %error, "job spec with an unsafe name ignored");
                Ok(ignored())
            }
        }
    }

    /// One prediction per image version, in two S3 requests when nothing is unusual: the image
    /// GET (pinned to the event's ETag) and a conditional PUT of the prediction; the model's
    /// pointer is cached. The existing prediction is read only when that PUT finds one.
    /// Transient errors fail the record so Lambda retries it; permanent ones (a broken
    /// `models/current.json`, an image deleted before its GET) become an error prediction.
    async fn classify(&self, object: &CreatedObject, path: &str) -> Result<RecordOutcome> {
        let (current, fetched) = tokio::join!(self.current_classifier(), self.fetch_image(object));
        let mut source_etag = object.etag.clone();
        let (model_id, classified) = match (current, fetched) {
            (Err(error), _) | (_, Err(error)) if error.is_transient() => return Err(error),
            (_, Ok(Fetched::Superseded)) => {
                return Ok(RecordOutcome::Superseded {
                    key: object.key.clone(),
                });
            }
            // No image to classify (deleted before its GET) says more than a broken model.
            (current, Err(error)) => (
                current.map_or_else(|_| NO_MODEL.to_owned(), |(model_id, _)| model_id),
                Err(error),
            ),
            (Err(error), _) => (NO_MODEL.to_owned(), Err(error)),
            (Ok((model_id, _)), Ok(Fetched::Refused(error))) => (model_id, Err(error.into())),
            (Ok((model_id, classifier)), Ok(Fetched::Image(image))) => {
                source_etag = source_etag.or_else(|| image.etag.as_deref().map(unquote));
                let classified = classify_image(classifier, image.bytes, self.limits.clone());
                (model_id, classified.await)
            }
        };
        let document = prediction_document(
            object.key.clone(),
            source_etag,
            model_id.clone(),
            classified,
        );
        let bucket = &self.config.results_bucket;
        if let PredictionWrite::Kept(_) = store_prediction(
            &self.store,
            bucket,
            path,
            &document,
            Replacing::OlderVersions,
        )
        .await?
        {
            return Ok(RecordOutcome::AlreadyPredicted {
                key: object.key.clone(),
            });
        }
        record_metrics(&document);
        Ok(match &document.error {
            None => RecordOutcome::Predicted {
                key: object.key.clone(),
                model_id,
            },
            Some(error) => RecordOutcome::ImageRejected {
                key: object.key.clone(),
                kind: error.kind.clone(),
            },
        })
    }

    /// The image version the event announced: refused from the event's size alone, read with
    /// `If-Match` on the event's ETag, or found replaced by a newer version.
    async fn fetch_image(&self, object: &CreatedObject) -> Result<Fetched> {
        if let Some(error) = object
            .size
            .and_then(|size| self.limits.check_encoded_len(size).err())
        {
            return Ok(Fetched::Refused(error));
        }
        let bucket = &self.config.input_bucket;
        Ok(match object.etag.as_deref() {
            Some(etag) => match self.store.get_if_match(bucket, &object.key, etag).await? {
                Some(image) => Fetched::Image(image),
                None => Fetched::Superseded,
            },
            None => Fetched::Image(self.store.get(bucket, &object.key).await?),
        })
    }

    /// The classifier `models/current.json` names, reloaded only when that object changes; the
    /// object itself is read again only after `Config::model_cache`.
    async fn current_classifier(&self) -> Result<(String, Classifier)> {
        if let Some(cached) = self.current.lock().await.as_ref()
            && cached.checked.elapsed() < self.config.model_cache
        {
            return Ok((cached.model_id.clone(), cached.classifier.clone()));
        }
        let bucket = &self.config.results_bucket;
        let current = self
            .store
            .get_json_if_exists::<CurrentModel>(bucket, layout::CURRENT_MODEL_KEY)
            .await?;
        let etag = current.as_ref().and_then(|c| c.etag.clone());
        let mut cache = self.current.lock().await;
        if let Some(cached) = cache.as_mut()
            && cached.etag == etag
        {
            cached.checked = Instant::now();
            return Ok((cached.model_id.clone(), cached.classifier.clone()));
        }
        let (model_id, head_key) = match current {
            None => (IMAGENET_MODEL.to_owned(), None),
            Some(pointer) => (pointer.document.model_id, Some(pointer.document.head_key)),
        };
        let backbone = self.backbone.get().await?;
        let classifier =
            load_classifier(&self.store, bucket, head_key.as_deref(), backbone).await?;
        info!(%model_id, "classification model loaded");
        *cache = Some(CachedClassifier {
            etag,
            model_id: model_id.clone(),
            classifier: classifier.clone(),
            checked: Instant::now(),
        });
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
        let spec = match self.store.get(&self.config.input_bucket, &object.key).await {
            Ok(spec) => spec,
            Err(error @ PipelineError::NotFound { .. }) => {
                // Deleted before it could be read: nothing to retry, but the owner hears why.
                let result = JobResult::failed(job_id, None, Vec::new(), &error, 0);
                self.store
                    .put_json_if_absent(bucket, &result_key, &result)
                    .await?;
                return Ok(RecordOutcome::JobRejected {
                    job_id: job_id.to_owned(),
                });
            }
            Err(error) => return Err(error),
        };
        if let Err(error) = JobRequest::parse(&spec.bytes) {
            // Tell the owner, if the spec says who that is, why the job never ran.
            let result = JobResult::rejected_spec(job_id, &spec.bytes, &error);
            self.store
                .put_json_if_absent(bucket, &result_key, &result)
                .await?;
            return Ok(RecordOutcome::JobRejected {
                job_id: job_id.to_owned(),
            });
        }
        // The GET above returned the newest version of the spec, whichever event this is; the
        // first event to claim the job pins those bytes. Duplicates and older events arriving
        // late find the claim and start nothing.
        let claim = layout::accepted_spec_key(job_id);
        if !self
            .store
            .put_if_absent(bucket, &claim, spec.bytes, JSON_CONTENT_TYPE)
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
}
