//! CloudWatch metrics in Embedded Metric Format: the handlers record through the `metrics`
//! facade (a no-op until a recorder is installed, as in unit tests); the Lambda binaries and
//! the demo install `metrics_cloudwatch_embedded`'s recorder and flush one EMF JSON line per
//! invocation, which CloudWatch turns into metrics without any API call.

use metrics::Unit;

/// Images classified successfully by the upload trigger.
pub const IMAGES_CLASSIFIED: &str = "ImagesClassified";
/// Error predictions the upload trigger wrote (bad input, limits, a model it could not load, an
/// image deleted before its GET).
pub const IMAGE_ERRORS: &str = "ImageErrors";
/// Backbone inference time per image.
pub const INFERENCE_MS: &str = "InferenceMs";
/// Whole-image time: decode, resize, infer.
pub const CLASSIFY_MS: &str = "ClassifyMs";
/// Wall time of a finished training job, summed over its continuations.
pub const JOB_DURATION_SECONDS: &str = "JobDurationSeconds";
/// Validation accuracy of a finished job, in percent.
pub const VALIDATION_ACCURACY: &str = "ValidationAccuracy";
/// Jobs that ended in a failed result.
pub const JOBS_FAILED: &str = "JobsFailed";
/// Report emails handed to the mail backend.
pub const EMAILS_SENT: &str = "EmailsSent";

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "LambdaVision";

/// Installs the EMF recorder (process-wide, once) with a `Function` dimension and declares the
/// units. Call [`metrics_cloudwatch_embedded::Collector::flush`] after each invocation.
pub fn install_emf_recorder(
    function: &str,
) -> Result<&'static metrics_cloudwatch_embedded::Collector, String> {
    let collector = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(NAMESPACE)
        .with_dimension("Function", function.to_owned())
        .init()
        .map_err(|e| e.to_string())?;
    metrics::describe_counter!(IMAGES_CLASSIFIED, Unit::Count, "images classified");
    metrics::describe_counter!(IMAGE_ERRORS, Unit::Count, "images rejected");
    metrics::describe_histogram!(INFERENCE_MS, Unit::Milliseconds, "backbone time per image");
    metrics::describe_histogram!(
        CLASSIFY_MS,
        Unit::Milliseconds,
        "decode+resize+infer per image"
    );
    metrics::describe_histogram!(
        JOB_DURATION_SECONDS,
        Unit::Seconds,
        "training job wall time"
    );
    metrics::describe_histogram!(
        VALIDATION_ACCURACY,
        Unit::Percent,
        "validation accuracy of a job"
    );
    metrics::describe_counter!(JOBS_FAILED, Unit::Count, "jobs ending in a failed result");
    metrics::describe_counter!(EMAILS_SENT, Unit::Count, "report emails sent");
    Ok(collector)
}
