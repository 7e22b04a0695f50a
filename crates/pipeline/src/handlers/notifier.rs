//! The notifier function: `results/<id>.json` → one email, exactly once.
//!
//! Before sending it claims `notifications/<id>.json` with a conditional write, so duplicate
//! events find the claim and send nothing. A send that SES refuses marks the claim `failed`
//! and returns an error, so Lambda retries and the retry may claim again. A send whose outcome
//! is unknown (a timeout) is marked `unconfirmed`, and a claim left `sending` (the function
//! died during the send) stays so: neither is ever re-sent. At most one email per result.
//! What retrying cannot fix (no sender configured, an unreadable result) is recorded as
//! `undeliverable` with its reason and acknowledged.

use std::sync::Arc;

use futures::StreamExt;
use tracing::warn;

use crate::clock::now_rfc3339;
use crate::config::Config;
use crate::documents::{
    JobResult, JobStatus, MISCLASSIFIED_FILE, Misclassified, NotificationRecord, NotificationState,
};
use crate::error::{PipelineError, Result};
use crate::event::S3Event;
use crate::layout;
use crate::mailer::{Mailer, OutgoingEmail};
use crate::observe;
use crate::report::{Thumbnail, build_message, render};
use crate::store::S3Store;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    Sent {
        job_id: String,
        message_id: String,
    },
    AlreadyHandled {
        job_id: String,
    },
    NoRecipients {
        job_id: String,
    },
    /// Recorded in the notification record as `unconfirmed` or `undeliverable` (`kind` says
    /// why), and not retried.
    NotSent {
        job_id: String,
        kind: String,
    },
    Ignored {
        key: String,
    },
}

pub struct Notifier {
    config: Config,
    store: S3Store,
    mailer: Arc<dyn Mailer>,
}

impl Notifier {
    pub fn new(config: Config, store: S3Store, mailer: Arc<dyn Mailer>) -> Self {
        Notifier {
            config,
            store,
            mailer,
        }
    }

    pub async fn handle(&self, event: &S3Event) -> Result<Vec<NotifyOutcome>> {
        super::for_each_record(event, |object| async move {
            match layout::parse_result_key(&object.key) {
                Ok(Some(job_id)) if object.bucket == self.config.results_bucket => {
                    self.notify(&job_id).await
                }
                _ => Ok(NotifyOutcome::Ignored { key: object.key }),
            }
        })
        .await
    }

    async fn notify(&self, job_id: &str) -> Result<NotifyOutcome> {
        let bucket = &self.config.results_bucket;
        let record_key = layout::notification_key(job_id);
        let result = match self
            .store
            .get_json::<JobResult>(bucket, &layout::result_key(job_id))
            .await
        {
            Ok(stored) => stored.document,
            Err(error) if error.is_transient() => return Err(error),
            Err(error) => return self.not_sent(job_id, Vec::new(), error).await,
        };
        let recipients = if result.notify.is_empty() {
            self.config.default_recipients.clone()
        } else {
            result.notify.clone()
        };
        if recipients.is_empty() {
            let record = record(NotificationState::NoRecipients, &recipients, None, None);
            self.store
                .put_json_if_absent(bucket, &record_key, &record)
                .await?;
            return Ok(NotifyOutcome::NoRecipients {
                job_id: job_id.to_owned(),
            });
        }
        let Some(sender) = self.config.sender_address.clone() else {
            let error = PipelineError::MissingConfig {
                name: "SENDER_ADDRESS",
                hint: "set it to a verified SES identity",
            };
            return self.not_sent(job_id, recipients, error).await;
        };
        let claim = record(NotificationState::Sending, &recipients, None, None);
        if !self.claim(&record_key, &claim).await? {
            return Ok(NotifyOutcome::AlreadyHandled {
                job_id: job_id.to_owned(),
            });
        }

        // From here on the claim is ours: a failure before SES accepted the mail marks the
        // record `failed`, so Lambda's retry may claim it again instead of finding it stuck.
        let sent = match self.compose(job_id, &result, sender, &recipients).await {
            Ok(email) => self.mailer.send(&email).await,
            Err(error) => Err(error),
        };
        match sent {
            Ok(message_id) => {
                metrics::counter!(observe::EMAILS_SENT).increment(1);
                let record = record(
                    NotificationState::Sent,
                    &recipients,
                    Some(message_id.clone()),
                    None,
                );
                self.store.put_json(bucket, &record_key, &record).await?;
                Ok(NotifyOutcome::Sent {
                    job_id: job_id.to_owned(),
                    message_id,
                })
            }
            Err(error) if error.is_transient() => {
                let failed = record(
                    NotificationState::Failed,
                    &recipients,
                    None,
                    Some(error.to_string()),
                );
                self.store.put_json(bucket, &record_key, &failed).await?;
                Err(error)
            }
            Err(error) => self.not_sent(job_id, recipients, error).await,
        }
    }

    /// Records why the report will not be sent (`unconfirmed` for a send whose outcome is
    /// unknown, `undeliverable` otherwise) over a claim of ours or where there is none yet,
    /// and acknowledges: retrying cannot help, or could send it twice.
    async fn not_sent(
        &self,
        job_id: &str,
        recipients: Vec<String>,
        error: PipelineError,
    ) -> Result<NotifyOutcome> {
        warn!(job_id, %error, "report not sent");
        let state = match error {
            PipelineError::EmailUnconfirmed(_) => NotificationState::Unconfirmed,
            _ => NotificationState::Undeliverable,
        };
        let bucket = &self.config.results_bucket;
        let record_key = layout::notification_key(job_id);
        let record = record(state, &recipients, None, Some(error.to_string()));
        match self
            .store
            .get_json_lenient::<NotificationRecord>(bucket, &record_key)
            .await?
        {
            // Our claim (the send was under way): replace it, unless someone else did.
            Some(stored) => {
                if let (Some(etag), Some(NotificationState::Sending)) =
                    (stored.etag, stored.document.map(|d| d.state))
                {
                    self.store
                        .put_json_if_match(bucket, &record_key, &record, &etag)
                        .await?;
                }
            }
            None => {
                self.store
                    .put_json_if_absent(bucket, &record_key, &record)
                    .await?;
            }
        }
        Ok(NotifyOutcome::NotSent {
            job_id: job_id.to_owned(),
            kind: error.kind().to_owned(),
        })
    }

    /// Takes the notification for this invocation: a new claim, or one a failed send left
    /// behind (replaced only if nobody else replaced it first). `false`: someone else has it.
    async fn claim(&self, record_key: &str, claim: &NotificationRecord) -> Result<bool> {
        let bucket = &self.config.results_bucket;
        if self
            .store
            .put_json_if_absent(bucket, record_key, claim)
            .await?
        {
            return Ok(true);
        }
        let previous = self
            .store
            .get_json::<NotificationRecord>(bucket, record_key)
            .await?;
        match previous.etag.as_deref() {
            Some(etag) if previous.document.state == NotificationState::Failed => {
                self.store
                    .put_json_if_match(bucket, record_key, claim, etag)
                    .await
            }
            _ => Ok(false),
        }
    }

    /// The report for `result`, rendered and built as a MIME message.
    async fn compose(
        &self,
        job_id: &str,
        result: &JobResult,
        sender: String,
        recipients: &[String],
    ) -> Result<OutgoingEmail> {
        let metrics = match (&result.status, &result.model) {
            (JobStatus::Succeeded, Some(_)) => self
                .store
                .get_json_lenient::<vision::Metrics>(
                    &self.config.results_bucket,
                    &layout::model_file_key(job_id, vision::bundle::METRICS_FILE),
                )
                .await?
                .and_then(|stored| stored.document),
            _ => None,
        };
        let mistakes = if metrics.is_some() {
            self.mistakes(job_id).await?
        } else {
            Vec::new()
        };
        let report = render(result, metrics.as_ref(), &mistakes);
        let raw = build_message(&report, &sender, recipients)?;
        Ok(OutgoingEmail {
            job_id: job_id.to_owned(),
            from: sender,
            to: recipients.to_vec(),
            raw,
        })
    }

    /// The thumbnails the trainer made of the model's misclassified held-out images; any that
    /// cannot be read are left out of the report (it is sent regardless).
    async fn mistakes(&self, job_id: &str) -> Result<Vec<Thumbnail>> {
        let bucket = &self.config.results_bucket;
        let listed = self
            .store
            .get_json_lenient::<Vec<Misclassified>>(
                bucket,
                &layout::model_file_key(job_id, MISCLASSIFIED_FILE),
            )
            .await?
            .and_then(|stored| stored.document)
            .unwrap_or_default();
        let keys = listed.iter().map(|m| m.thumbnail_key.clone()).collect();
        let fetched: Vec<_> = self.store.get_many(bucket, keys, 4).collect().await;
        Ok(listed
            .into_iter()
            .zip(fetched)
            .filter_map(|(mistake, (_, object))| {
                object.ok().map(|object| Thumbnail {
                    image: mistake.image,
                    jpeg: object.bytes,
                })
            })
            .collect())
    }
}

/// The notification record in `state`, stamped now.
fn record(
    state: NotificationState,
    recipients: &[String],
    message_id: Option<String>,
    error: Option<String>,
) -> NotificationRecord {
    NotificationRecord {
        state,
        recipients: recipients.to_vec(),
        message_id,
        error,
        updated_at: now_rfc3339(),
    }
}
