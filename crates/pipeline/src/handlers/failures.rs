//! The failure recorder: the on-failure destination of the upload trigger and the trainer, and
//! the target of the training state machine's failed, timed-out or aborted executions. When
//! Lambda gives up on an invocation (its retries exhausted, or its event too old), or an
//! execution ends without a result (an error no `Catch` can take, a stop by hand), the user
//! still gets what they wait for: an error prediction for each image, a failed result — and so
//! exactly one email — for each job. Every write is conditional, so a record delivered
//! twice writes nothing new; the keys written (`predictions/…`, `results/…`) trigger only the
//! notifier, never this function or the ones it records for.

use serde::Deserialize;
use tracing::{info, warn};

use crate::config::Config;
use crate::documents::{ErrorInfo, NO_MODEL, PredictionDocument};
use crate::error::Result;
use crate::event::{CreatedObject, S3Event};
use crate::launcher::TrainerEvent;
use crate::layout::{self, InputKey};
use crate::predictions::{PredictionWrite, Replacing, write_prediction};
use crate::store::S3Store;

/// What Lambda sends an on-failure destination: the original event and how its invocation
/// ended (only the fields used here).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvocationRecord {
    pub request_context: RequestContext,
    /// The event the failed invocation was given.
    pub request_payload: serde_json::Value,
    /// The function's error (`errorType`, `errorMessage`), when it returned one.
    #[serde(default)]
    pub response_payload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    pub request_id: String,
    pub function_arn: String,
    /// `RetriesExhausted` or `EventAgeExceeded`.
    pub condition: String,
    #[serde(default)]
    pub approximate_invoke_count: u32,
}

/// What the failure recorder is invoked with.
#[derive(Debug, Clone)]
pub enum FailureInput {
    /// Lambda's on-failure destination record.
    Invocation(Box<InvocationRecord>),
    /// EventBridge's "Step Functions Execution Status Change" for an execution that ended
    /// `FAILED`, `TIMED_OUT` or `ABORTED`.
    Execution(ExecutionEnded),
}

impl<'de> Deserialize<'de> for FailureInput {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let parsed = if value.get("detail-type").is_some() {
            serde_json::from_value::<ExecutionEvent>(value)
                .map(|e| FailureInput::Execution(e.detail))
        } else {
            serde_json::from_value(value).map(|r| FailureInput::Invocation(Box::new(r)))
        };
        parsed.map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
struct ExecutionEvent {
    detail: ExecutionEnded,
}

/// The fields used of an execution status change's `detail`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionEnded {
    pub name: String,
    pub status: String,
    /// The execution's input as JSON text: `{"job_id": …}`.
    #[serde(default)]
    pub input: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cause: Option<String>,
}

/// What the recorder did for one item of the failed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureOutcome {
    ImageRecorded {
        key: String,
    },
    JobFailed {
        job_id: String,
    },
    /// A prediction or result was already there (the work succeeded after all, or this record
    /// came twice): left as it is.
    AlreadyRecorded {
        key: String,
    },
    Ignored {
        reason: String,
    },
}

pub struct FailureRecorder {
    config: Config,
    store: S3Store,
}

impl FailureRecorder {
    pub fn new(config: Config, store: S3Store) -> Self {
        FailureRecorder { config, store }
    }

    /// Records what `input` reports; see [`FailureRecorder::handle`] and
    /// [`FailureRecorder::handle_execution`].
    pub async fn handle_input(&self, input: &FailureInput) -> Result<Vec<FailureOutcome>> {
        match input {
            FailureInput::Invocation(record) => self.handle(record).await,
            FailureInput::Execution(ended) => Ok(vec![self.handle_execution(ended).await?]),
        }
    }

    /// Writes the failed result of a training execution that ended without one. Usually the
    /// state machine's own `Catch` has written it already, and nothing more is written.
    pub async fn handle_execution(&self, ended: &ExecutionEnded) -> Result<FailureOutcome> {
        let job_id = ended
            .input
            .as_deref()
            .and_then(|input| serde_json::from_str::<serde_json::Value>(input).ok())
            .and_then(|input| input.get("job_id")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| ended.name.clone());
        let detail = [ended.error.as_deref(), ended.cause.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        let detail: String = detail.chars().take(500).collect();
        let cause = ErrorInfo {
            kind: "state_machine_ended".to_owned(),
            message: format!(
                "the training state machine's execution {} ended {}{}{}",
                ended.name,
                ended.status,
                if detail.is_empty() { "" } else { ": " },
                detail
            ),
        };
        warn!(job_id, status = %ended.status, "a training execution ended without a result");
        self.fail_job(&job_id, 0, cause).await
    }

    /// Records the failure of every image and job in `record`'s event. Transient S3 errors
    /// fail the invocation, which Lambda retries (and then sends to the dead-letter queue).
    pub async fn handle(&self, record: &InvocationRecord) -> Result<Vec<FailureOutcome>> {
        let cause = cause(record);
        warn!(
            function = %record.request_context.function_arn,
            request_id = %record.request_context.request_id,
            kind = %cause.kind,
            message = %cause.message,
            "an invocation was given up"
        );
        let payload = &record.request_payload;
        if let Ok(event) = serde_json::from_value::<TrainerEvent>(payload.clone()) {
            return Ok(vec![
                self.fail_job(&event.job_id, event.continuation, cause)
                    .await?,
            ]);
        }
        if let Ok(event) = serde_json::from_value::<S3Event>(payload.clone()) {
            return super::for_each_record(&event, |object| {
                let cause = cause.clone();
                async move { self.record_object(&object, cause).await }
            })
            .await;
        }
        // Nothing to retry: the same record would be as unusable again.
        Ok(vec![FailureOutcome::Ignored {
            reason: "the failed event is neither a trainer event nor an S3 event".to_owned(),
        }])
    }

    async fn record_object(
        &self,
        object: &CreatedObject,
        cause: ErrorInfo,
    ) -> Result<FailureOutcome> {
        if object.bucket != self.config.input_bucket {
            return Ok(FailureOutcome::Ignored {
                reason: format!(
                    "s3://{}/{} is not in the input bucket",
                    object.bucket, object.key
                ),
            });
        }
        match InputKey::parse(&object.key) {
            Ok(InputKey::Image { path }) => {
                let document = PredictionDocument {
                    error: Some(cause),
                    ..PredictionDocument::empty(
                        object.key.clone(),
                        object.etag.clone(),
                        NO_MODEL.to_owned(),
                    )
                };
                let key = layout::prediction_key(&path);
                let bucket = &self.config.results_bucket;
                Ok(
                    if write_prediction(
                        &self.store,
                        bucket,
                        &key,
                        &document,
                        Replacing::OlderVersions,
                    )
                    .await?
                        == PredictionWrite::Written
                    {
                        FailureOutcome::ImageRecorded { key }
                    } else {
                        FailureOutcome::AlreadyRecorded { key }
                    },
                )
            }
            Ok(InputKey::JobSpec { job_id }) => self.fail_job(&job_id, 0, cause).await,
            Ok(InputKey::Other) | Err(_) => Ok(FailureOutcome::Ignored {
                reason: format!("{} is neither an image nor a job spec", object.key),
            }),
        }
    }

    /// Writes the job's failed result, unless it has one. Its recipients and dataset come from
    /// the spec the job was accepted with, or the spec as uploaded, as far as either is readable.
    async fn fail_job(
        &self,
        job_id: &str,
        continuations: u32,
        cause: ErrorInfo,
    ) -> Result<FailureOutcome> {
        let key = layout::result_key(job_id);
        Ok(
            if super::record_failed_job(&self.store, &self.config, job_id, continuations, cause)
                .await?
            {
                info!(
                    job_id,
                    "failed result written for a job that was given up on"
                );
                FailureOutcome::JobFailed {
                    job_id: job_id.to_owned(),
                }
            } else {
                FailureOutcome::AlreadyRecorded { key }
            },
        )
    }
}

/// What the user is told: which function gave up, after how many attempts, and its last error.
fn cause(record: &InvocationRecord) -> ErrorInfo {
    let context = &record.request_context;
    let function = context
        .function_arn
        .split(':')
        .nth(6)
        .unwrap_or(&context.function_arn);
    let error = record.response_payload.as_ref();
    let field = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let last = match (field("errorType"), field("errorMessage")) {
        (Some(kind), Some(message)) => format!("{kind}: {message}"),
        (None, Some(message)) => message,
        (Some(kind), None) => kind,
        (None, None) => "no error was reported (a timeout or a crash)".to_owned(),
    };
    let kind = match context.condition.as_str() {
        "EventAgeExceeded" => "event_too_old",
        _ => "retries_exhausted",
    };
    ErrorInfo {
        kind: kind.to_owned(),
        message: format!(
            "{function} gave up after {} attempt(s) ({}); the last error was {last}",
            context.approximate_invoke_count.max(1),
            context.condition
        ),
    }
}
