//! The four Lambda handlers, over the shared pieces of the crate (documents, store, layout,
//! events, report). No handler imports another: what two of them share lives below them.
//! They live in the library, not in `functions/`, so the demo and the tests run exactly what
//! Lambda runs.

pub mod failures;
pub mod notifier;
pub mod trainer;
pub mod upload;

use std::fmt::Debug;
use std::future::Future;

use tracing::{Instrument, info, warn};

use crate::config::Config;
use crate::documents::{ErrorInfo, JobRequest, JobResult, salvage_notify};
use crate::error::Result;
use crate::event::{CreatedObject, S3Event, created_objects};
use crate::layout;
use crate::store::S3Store;

pub use failures::{FailureInput, FailureOutcome, FailureRecorder, InvocationRecord};
pub use notifier::{Notifier, NotifyOutcome};
pub use trainer::{
    MapStep, ProgressObserver, StepOutput, Trainer, TrainerInput, TrainerOptions, TrainerOutcome,
    TrainingProgress,
};
pub use upload::{RecordOutcome, UploadTrigger};

/// The bytes of the spec a job runs with: the copy pinned when the upload trigger accepted it,
/// or, for a job started without it (a direct invoke, `sam local invoke`), `jobs/<id>.json` as
/// it is now. `None` when neither exists. The trainer runs this spec; the failure recorder
/// takes the recipients from it.
pub(crate) async fn job_spec_bytes(
    store: &S3Store,
    config: &Config,
    job_id: &str,
) -> Result<Option<Vec<u8>>> {
    let pinned = store
        .get_if_exists(&config.results_bucket, &layout::accepted_spec_key(job_id))
        .await?;
    Ok(match pinned {
        Some(object) => Some(object.bytes),
        None => store
            .get_if_exists(&config.input_bucket, &layout::job_spec_key(job_id))
            .await?
            .map(|object| object.bytes),
    })
}

/// Writes the failed result of a job that something gave up on (Lambda's retries, the state
/// machine's Catch), once: the recipients come from the job's spec where it can be read.
/// `false` when a result already existed (the work succeeded after all, or this is a repeat).
pub(crate) async fn record_failed_job(
    store: &S3Store,
    config: &Config,
    job_id: &str,
    continuations: u32,
    cause: ErrorInfo,
) -> Result<bool> {
    layout::validate_id("job id", job_id)?;
    let spec_bytes = job_spec_bytes(store, config, job_id).await?;
    let request = spec_bytes.as_deref().map(JobRequest::parse);
    let (dataset, prefix, notify) = match &request {
        Some(Ok(request)) => (
            request.dataset().map(str::to_owned),
            request.prefix().map(str::to_owned),
            request.notify().to_vec(),
        ),
        Some(Err(_)) => (
            None,
            None,
            spec_bytes
                .as_deref()
                .map(salvage_notify)
                .unwrap_or_default(),
        ),
        None => (None, None, Vec::new()),
    };
    let mut result = JobResult::failed_with(job_id, dataset, notify, cause, continuations);
    result.prefix = prefix;
    store
        .put_json_if_absent(&config.results_bucket, &layout::result_key(job_id), &result)
        .await
}

/// The record loop of the S3-triggered handlers: `handle` runs for every created object of
/// `event`, each on its own, in a span carrying its bucket and key (in Lambda, the runtime's
/// enclosing span adds the request id). A record that names no usable object is logged and
/// skipped. A failed record does not stop its neighbours; the last failure is returned so
/// Lambda retries the event, and the records already done must be idempotent.
pub(crate) async fn for_each_record<O, F, Fut>(event: &S3Event, handle: F) -> Result<Vec<O>>
where
    O: Debug,
    F: Fn(CreatedObject) -> Fut,
    Fut: Future<Output = Result<O>>,
{
    let mut outcomes = Vec::new();
    let mut failure = None;
    for object in created_objects(event) {
        let object = match object {
            Ok(object) => object,
            Err(reason) => {
                warn!(%reason, "skipping a record that names no usable object");
                continue;
            }
        };
        let span = tracing::info_span!("record", bucket = %object.bucket, key = %object.key);
        let result = handle(object).instrument(span.clone()).await;
        let _entered = span.enter();
        match result {
            Ok(outcome) => {
                info!(?outcome, "record handled");
                outcomes.push(outcome);
            }
            Err(error) => {
                warn!(%error, "record failed; the event will be retried");
                failure = Some(error);
            }
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(outcomes),
    }
}
