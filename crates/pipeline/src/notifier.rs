//! The notifier function: `results/<id>.json` → one email, exactly once.
//!
//! Before sending it claims `notifications/<id>.json` with a conditional write, so duplicate
//! events find the claim and send nothing. A send that SES refuses marks the claim `failed`
//! and returns an error, so Lambda retries and the retry may claim again. A claim left
//! `sending` (the function died after SES may have accepted the message) is never re-sent:
//! at most one email per result.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tracing::{Instrument, info, warn};

use crate::config::Config;
use crate::email::{build_message, render};
use crate::error::{PipelineError, Result};
use crate::event::{S3Event, created_objects};
use crate::job::{JobResult, JobStatus};
use crate::layout;
use crate::mail::{Mailer, OutgoingEmail};
use crate::store::S3Store;
use crate::upload::parse_json;

/// `notifications/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub state: NotificationState,
    #[serde(default)]
    pub recipients: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub updated_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationState {
    Sending,
    Sent,
    Failed,
    NoRecipients,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyOutcome {
    Sent { job_id: String, message_id: String },
    AlreadyHandled { job_id: String },
    NoRecipients { job_id: String },
    Ignored { key: String },
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
        let mut outcomes = Vec::new();
        let mut failure = None;
        for object in created_objects(event).into_iter().flatten() {
            let span = tracing::info_span!("record", bucket = %object.bucket, key = %object.key);
            let outcome = match layout::parse_result_key(&object.key) {
                Ok(Some(job_id)) if object.bucket == self.config.results_bucket => {
                    self.notify(&job_id).instrument(span.clone()).await
                }
                _ => Ok(NotifyOutcome::Ignored {
                    key: object.key.clone(),
                }),
            };
            let _entered = span.enter();
            match outcome {
                Ok(outcome) => {
                    info!(?outcome, "result handled");
                    outcomes.push(outcome);
                }
                Err(error) => {
                    warn!(%error, key = %object.key, "notification failed; the event will be retried");
                    failure = Some(error);
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(outcomes),
        }
    }

    async fn notify(&self, job_id: &str) -> Result<NotifyOutcome> {
        let bucket = &self.config.results_bucket;
        let result_key = layout::result_key(job_id);
        let object = self.store.get(bucket, &result_key).await?;
        let result: JobResult = parse_json("job result", bucket, &result_key, &object.bytes)?;
        let recipients = if result.notify.is_empty() {
            self.config.default_recipients.clone()
        } else {
            result.notify.clone()
        };
        let record_key = layout::notification_key(job_id);
        let record = |state, message_id: Option<String>, error: Option<String>| {
            serde_json::to_vec_pretty(&NotificationRecord {
                state,
                recipients: recipients.clone(),
                message_id,
                error,
                updated_at: crate::now_rfc3339(),
            })
            .unwrap_or_default()
        };
        if recipients.is_empty() {
            self.store
                .put_if_absent(
                    bucket,
                    &record_key,
                    record(NotificationState::NoRecipients, None, None),
                    "application/json",
                )
                .await?;
            return Ok(NotifyOutcome::NoRecipients {
                job_id: job_id.to_owned(),
            });
        }
        let sender = self
            .config
            .sender_address
            .clone()
            .ok_or(PipelineError::MissingConfig {
                name: "SENDER_ADDRESS",
                hint: "set it to a verified SES identity",
            })?;

        // Claim the notification; only the claimant sends.
        let claim = record(NotificationState::Sending, None, None);
        if !self
            .store
            .put_if_absent(bucket, &record_key, claim.clone(), "application/json")
            .await?
        {
            let existing = self.store.get(bucket, &record_key).await?;
            let previous: NotificationRecord =
                parse_json("notification record", bucket, &record_key, &existing.bytes)?;
            let retry_allowed = previous.state == NotificationState::Failed
                && match existing.etag.as_deref() {
                    Some(etag) => {
                        self.store
                            .put_if_match(bucket, &record_key, claim, "application/json", etag)
                            .await?
                    }
                    None => false,
                };
            if !retry_allowed {
                return Ok(NotifyOutcome::AlreadyHandled {
                    job_id: job_id.to_owned(),
                });
            }
        }

        // From here on the claim is ours: any failure before the mail is accepted marks the
        // record `failed`, so Lambda's retry may claim it again instead of finding it stuck.
        let sent = match self.compose(job_id, &result, sender, &recipients).await {
            Ok(email) => self.mailer.send(&email).await,
            Err(error) => Err(error),
        };
        match sent {
            Ok(message_id) => {
                metrics::counter!(crate::observe::EMAILS_SENT).increment(1);
                self.store
                    .put(
                        bucket,
                        &record_key,
                        record(NotificationState::Sent, Some(message_id.clone()), None),
                        "application/json",
                    )
                    .await?;
                Ok(NotifyOutcome::Sent {
                    job_id: job_id.to_owned(),
                    message_id,
                })
            }
            Err(error) => {
                self.store
                    .put(
                        bucket,
                        &record_key,
                        record(NotificationState::Failed, None, Some(error.to_string())),
                        "application/json",
                    )
                    .await?;
                Err(error)
            }
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
        let bucket = &self.config.results_bucket;
        let metrics = match (&result.status, &result.model) {
            (JobStatus::Succeeded, Some(_)) => {
                let key = layout::model_file_key(job_id, vision::bundle::METRICS_FILE);
                match self.store.get_if_exists(bucket, &key).await? {
                    Some(object) => serde_json::from_slice::<vision::Metrics>(&object.bytes).ok(),
                    None => None,
                }
            }
            _ => None,
        };
        let report = render(result, metrics.as_ref());
        let raw = build_message(&report, &sender, recipients)?;
        Ok(OutgoingEmail {
            job_id: job_id.to_owned(),
            from: sender,
            to: recipients.to_vec(),
            raw,
        })
    }
}
