//! Errors of the pipeline glue, split by what the caller should do: bad input is recorded in S3
//! and acknowledged; a transient AWS failure is returned so Lambda retries.

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "unsafe {what} {value:?}: use 1–128 letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    UnsafeName { what: &'static str, value: String },

    #[error("invalid job spec{}: {reason}", field.as_ref().map(|f| format!(" (field `{f}`)")).unwrap_or_default())]
    InvalidSpec {
        field: Option<String>,
        reason: String,
    },

    #[error("environment variable {name} is not set: {hint}")]
    MissingConfig {
        name: &'static str,
        hint: &'static str,
    },

    #[error("environment variable {name} is invalid: {reason}")]
    InvalidConfig { name: &'static str, reason: String },

    #[error("S3 object s3://{bucket}/{key} does not exist")]
    NotFound { bucket: String, key: String },

    #[error(
        "S3 object s3://{bucket}/{key} is no longer the version the event announced (a newer upload replaced it)"
    )]
    Changed { bucket: String, key: String },

    #[error("S3 object s3://{bucket}/{key} already exists (conditional write refused)")]
    AlreadyExists { bucket: String, key: String },

    #[error("S3 {operation} on s3://{bucket}/{key} failed: {message}")]
    S3 {
        operation: &'static str,
        bucket: String,
        key: String,
        message: String,
    },

    #[error("{what} in s3://{bucket}/{key} is not valid JSON: {reason}")]
    BadDocument {
        what: &'static str,
        bucket: String,
        key: String,
        reason: String,
    },

    #[error("cannot encode the {what} as JSON: {reason}")]
    Encode { what: &'static str, reason: String },

    #[error(
        "the job did not finish within {limit} continuations ({done} of {total} images extracted); raise MAX_CONTINUATIONS or the trainer's memory (more vCPUs)"
    )]
    ContinuationLimit {
        limit: u32,
        done: usize,
        total: usize,
    },

    /// Training found images without cached features: the extraction (a Map of shards) did
    /// not cover the dataset as it is now, e.g. images were added after the job was prepared.
    #[error(
        "{missing} of the dataset's {total} images have no cached features (first: {first}); the extraction did not finish, or images were added after the job started: submit the spec again under a new job id (the features extracted so far are reused)"
    )]
    FeaturesMissing {
        missing: usize,
        total: usize,
        first: String,
    },

    /// A reclassification's shards did not all report their rows, though the Map succeeded.
    #[error(
        "{missing} of the {total} images listed under the prefix have no row from their shard; the Map did not finish every shard: submit the spec again under a new job id (predictions already written stay)"
    )]
    PredictionsMissing { missing: usize, total: usize },

    #[error("a worker thread failed: {0}")]
    WorkerFailed(String),

    #[error("sending email failed: {0}")]
    Email(String),

    #[error(
        "the email may or may not have been sent: {0}; it is not sent again (at most one email per result)"
    )]
    EmailUnconfirmed(String),

    #[error("the report email cannot be built: {0}")]
    InvalidEmail(String),

    /// A change of the serving model that cannot be made (no such version, another backbone,
    /// nothing to roll back to); nothing was written.
    #[error("{0}")]
    ModelChangeRefused(String),

    /// Starting the trainer (async Invoke) or the training state machine (StartExecution).
    #[error("starting {0}")]
    Invoke(String),

    #[error(transparent)]
    Vision(#[from] vision::VisionError),
}

impl PipelineError {
    /// Stable machine-readable name, used in error and result documents.
    pub fn kind(&self) -> &'static str {
        match self {
            PipelineError::UnsafeName { .. } => "unsafe_name",
            PipelineError::InvalidSpec { .. } => "invalid_spec",
            PipelineError::MissingConfig { .. } => "missing_config",
            PipelineError::InvalidConfig { .. } => "invalid_config",
            PipelineError::NotFound { .. } => "not_found",
            PipelineError::Changed { .. } => "changed",
            PipelineError::AlreadyExists { .. } => "already_exists",
            PipelineError::S3 { .. } => "s3",
            PipelineError::BadDocument { .. } => "bad_document",
            PipelineError::Encode { .. } => "encode",
            PipelineError::ContinuationLimit { .. } => "continuation_limit",
            PipelineError::FeaturesMissing { .. } => "features_missing",
            PipelineError::PredictionsMissing { .. } => "predictions_missing",
            PipelineError::WorkerFailed(_) => "worker_failed",
            PipelineError::Email(_) => "email",
            PipelineError::EmailUnconfirmed(_) => "email_unconfirmed",
            PipelineError::InvalidEmail(_) => "invalid_email",
            PipelineError::ModelChangeRefused(_) => "model_change_refused",
            PipelineError::Invoke(_) => "invoke",
            PipelineError::Vision(e) => e.kind(),
        }
    }

    /// True when retrying the same event could succeed (AWS outages, throttling), so the handler
    /// should return an error and let Lambda retry.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PipelineError::S3 { .. } | PipelineError::Email(_) | PipelineError::Invoke(_)
        )
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// A blocking task (model compilation, extraction, inference) that panicked or was cancelled:
/// a fault of its own, not of the image or the job it was working on.
impl From<tokio::task::JoinError> for PipelineError {
    fn from(error: tokio::task::JoinError) -> Self {
        PipelineError::WorkerFailed(error.to_string())
    }
}

/// What Lambda reports for a failed invocation (CloudWatch, the dead-letter queue, `sam local
/// invoke`): `errorType` is the stable kind in PascalCase (`S3`, `InvalidConfig`, `Email`, …) so
/// alarms and replays can match on it, and `errorMessage` is one line. The SDK's full error chain
/// was logged where the error was made.
impl From<PipelineError> for lambda_runtime::Diagnostic {
    fn from(error: PipelineError) -> Self {
        tracing::error!(kind = error.kind(), %error, "invocation failed");
        lambda_runtime::Diagnostic {
            error_type: pascal_case(error.kind()),
            error_message: one_line(&error.to_string()),
        }
    }
}

/// `limit_exceeded` → `LimitExceeded`, `s3` → `S3`.
fn pascal_case(snake: &str) -> String {
    snake
        .split('_')
        .flat_map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
        })
        .collect()
}

/// Line breaks (from a server's message, say) become spaces.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line saying why an AWS request failed, for error documents and Lambda's `errorMessage`:
/// the service's error code and message, or what kept the request from completing. The SDK's
/// `DisplayErrorContext` also dumps the raw HTTP response, so that goes to the log only.
pub(crate) fn describe_sdk_error<E, R>(error: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_s3::error::SdkError;
    tracing::warn!(error = %aws_sdk_s3::error::DisplayErrorContext(error), "AWS request failed");
    let summary = match error {
        SdkError::ServiceError(context) => {
            let service_error = context.err();
            match (service_error.code(), service_error.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => source_chain(service_error),
            }
        }
        SdkError::TimeoutError(_) => "the request timed out".to_owned(),
        other => source_chain(other),
    };
    one_line(&summary)
}

/// An error and its sources, `: `-separated, repeats dropped.
fn source_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_sees_a_stable_kind_and_one_line() {
        let error = PipelineError::S3 {
            operation: "GetObject",
            bucket: "in".into(),
            key: "images/a.jpg".into(),
            message: "NoSuchBucket: The specified bucket\ndoes not exist".into(),
        };
        let diagnostic = lambda_runtime::Diagnostic::from(error);
        assert_eq!(diagnostic.error_type, "S3");
        assert_eq!(
            diagnostic.error_message,
            "S3 GetObject on s3://in/images/a.jpg failed: NoSuchBucket: The specified bucket does not exist"
        );
        let missing = PipelineError::MissingConfig {
            name: "INPUT_BUCKET",
            hint: "set it",
        };
        assert_eq!(
            lambda_runtime::Diagnostic::from(missing).error_type,
            "MissingConfig"
        );
        let invalid = PipelineError::InvalidConfig {
            name: "MAX_CONTINUATIONS",
            reason: "x".into(),
        };
        assert_eq!(
            lambda_runtime::Diagnostic::from(invalid).error_type,
            "InvalidConfig"
        );
        let vision = PipelineError::Vision(vision::VisionError::Empty);
        assert_eq!(lambda_runtime::Diagnostic::from(vision).error_type, "Empty");
    }

    /// A pipeline limit and a crashed worker say what they are, not "inference".
    #[tokio::test]
    async fn limits_and_worker_failures_have_kinds_of_their_own() {
        let limit = PipelineError::ContinuationLimit {
            limit: 10,
            done: 700,
            total: 9000,
        };
        assert_eq!(limit.kind(), "continuation_limit");
        assert!(!limit.is_transient());
        assert!(limit.to_string().contains("700 of 9000"), "{limit}");
        assert_eq!(
            lambda_runtime::Diagnostic::from(limit).error_type,
            "ContinuationLimit"
        );
        let panicked = tokio::task::spawn_blocking(|| -> u8 { panic!("worker fell over") })
            .await
            .unwrap_err();
        let worker = PipelineError::from(panicked);
        assert_eq!(worker.kind(), "worker_failed");
        assert!(
            worker.to_string().contains("worker thread failed"),
            "{worker}"
        );
    }

    #[test]
    fn kinds_become_pascal_case() {
        assert_eq!(pascal_case("s3"), "S3");
        assert_eq!(pascal_case("limit_exceeded"), "LimitExceeded");
        assert_eq!(pascal_case("email"), "Email");
    }
}
