//! Where reports go: SES v2 in Lambda, a folder of `.eml` files in the demo.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;

use crate::error::{PipelineError, Result};

/// One message to deliver: raw RFC 5322 bytes plus the envelope.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub job_id: String,
    pub from: String,
    pub to: Vec<String>,
    pub raw: Vec<u8>,
}

#[async_trait::async_trait]
pub trait Mailer: Send + Sync {
    /// Delivers the message; returns the provider's message id. `Email` means it was
    /// definitely not accepted, so a retry cannot send it twice; `EmailUnconfirmed` means it
    /// may have been (a timeout, a lost connection), so it must not be retried.
    async fn send(&self, email: &OutgoingEmail) -> Result<String>;
}

/// The mail backend the configuration asks for: a file outbox when `MAIL_OUTBOX_DIR` is set,
/// SES v2 otherwise.
pub fn mailer_for(config: &Config, aws: &aws_config::SdkConfig) -> Arc<dyn Mailer> {
    match &config.mail_outbox_dir {
        Some(dir) => Arc::new(OutboxMailer { dir: dir.clone() }),
        None => Arc::new(SesMailer::new(aws)),
    }
}

/// Amazon SES v2 `SendEmail` with raw content (keeps the inline chart).
///
/// At most once: the SDK makes one attempt (its retries would resend a message SES may have
/// accepted), and a call that ends without SES's answer — a timeout, a lost connection, a
/// server error — is `EmailUnconfirmed`, which the notifier records and does not retry. Only
/// SES's explicit refusals (4xx: throttling, an unverified sender) are `Email`, retried by
/// Lambda.
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
}

/// How long one `SendEmail` call may take before it counts as unconfirmed: well inside the
/// notifier's 60 s timeout, so the notifier can still record it.
pub const SES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

impl SesMailer {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self::with_timeout(config, SES_TIMEOUT)
    }

    /// With another limit on one call (tests use a short one).
    pub fn with_timeout(config: &aws_config::SdkConfig, timeout: std::time::Duration) -> Self {
        let ses_config = aws_sdk_sesv2::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .operation_timeout(timeout)
                    .build(),
            )
            .build();
        SesMailer {
            client: aws_sdk_sesv2::Client::from_conf(ses_config),
        }
    }
}

#[async_trait::async_trait]
impl Mailer for SesMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<String> {
        use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
        let raw = RawMessage::builder()
            .data(aws_sdk_sesv2::primitives::Blob::new(email.raw.clone()))
            .build()
            .map_err(|e| PipelineError::Email(e.to_string()))?;
        let output = self
            .client
            .send_email()
            .from_email_address(&email.from)
            .destination(
                Destination::builder()
                    .set_to_addresses(Some(email.to.clone()))
                    .build(),
            )
            .content(EmailContent::builder().raw(raw).build())
            .send()
            .await
            .map_err(|e| {
                let described = crate::error::describe_sdk_error(&e);
                if refused(&e) {
                    PipelineError::Email(described)
                } else {
                    PipelineError::EmailUnconfirmed(described)
                }
            })?;
        Ok(output.message_id().unwrap_or_default().to_owned())
    }
}

/// Whether SES answered with a refusal (a 4xx, or a request never sent), as opposed to a call
/// whose outcome is unknown.
fn refused<E>(
    error: &aws_sdk_sesv2::error::SdkError<E, aws_sdk_sesv2::config::http::HttpResponse>,
) -> bool {
    use aws_sdk_sesv2::error::SdkError;
    match error {
        SdkError::ConstructionFailure(_) => true,
        SdkError::ServiceError(context) => (400..500).contains(&context.raw().status().as_u16()),
        _ => false,
    }
}

/// Writes `<dir>/<job-id>.eml`, openable in any mail client.
pub struct OutboxMailer {
    pub dir: PathBuf,
}

#[async_trait::async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &OutgoingEmail) -> Result<String> {
        let path = self.dir.join(format!("{}.eml", email.job_id));
        tokio::fs::create_dir_all(&self.dir)
            .await
            .and(tokio::fs::write(&path, &email.raw).await)
            .map_err(|e| PipelineError::Email(format!("cannot write {}: {e}", path.display())))?;
        Ok(path.display().to_string())
    }
}
