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

    #[error("sending email failed: {0}")]
    Email(String),

    #[error("starting the trainer failed: {0}")]
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
            PipelineError::MissingConfig { .. } | PipelineError::InvalidConfig { .. } => {
                "configuration"
            }
            PipelineError::NotFound { .. } => "not_found",
            PipelineError::AlreadyExists { .. } => "already_exists",
            PipelineError::S3 { .. } => "s3",
            PipelineError::BadDocument { .. } => "bad_document",
            PipelineError::Email(_) => "email",
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
