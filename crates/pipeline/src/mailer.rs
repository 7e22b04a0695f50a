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
    /// Delivers the message; returns the provider's message id. An error means it was
    /// definitely not accepted, so retrying cannot send it twice.
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
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
}

impl SesMailer {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        SesMailer {
            client: aws_sdk_sesv2::Client::new(config),
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
            .map_err(|e| PipelineError::Email(crate::error::describe_sdk_error(&e)))?;
        Ok(output.message_id().unwrap_or_default().to_owned())
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
