//! The job's lease (`checkpoints/<id>/lease.json`): one trainer invocation per job, however the
//! trainer is invoked. Lambda retries an invocation with the same request id, so a retry takes
//! its own lease back; a duplicate delivery or a second direct invoke has another id and finds
//! the lease held until its holder's deadline.

use std::time::Instant;

use super::Trainer;
use crate::documents::TrainerLease;
use crate::error::Result;
use crate::layout;

impl Trainer {
    /// Takes the job for this invocation: free, or held by an earlier continuation, by this
    /// same invocation (a Lambda retry), or by one whose deadline has passed. `false` when
    /// another invocation holds it, or the job has moved past this continuation.
    pub(super) async fn take_lease(
        &self,
        job_id: &str,
        continuation: u32,
        invocation: &str,
        deadline: Instant,
    ) -> Result<bool> {
        let bucket = &self.config.results_bucket;
        let key = layout::lease_key(job_id);
        let now_ms = epoch_ms(Instant::now());
        let lease = TrainerLease {
            continuation,
            holder: invocation.to_owned(),
            expires_at_ms: epoch_ms(deadline),
        };
        let Some(held) = self
            .store
            .get_json_lenient::<TrainerLease>(bucket, &key)
            .await?
        else {
            return self.store.put_json_if_absent(bucket, &key, &lease).await;
        };
        let free = held.document.as_ref().is_none_or(|held| {
            held.continuation < continuation
                || (held.continuation == continuation
                    && (held.holder == invocation || held.expires_at_ms <= now_ms))
        });
        match held.etag {
            Some(etag) if free => {
                self.store
                    .put_json_if_match(bucket, &key, &lease, &etag)
                    .await
            }
            _ => Ok(false),
        }
    }
}

/// `instant` as milliseconds since the Unix epoch (the lease's clock, shared by all invocations).
fn epoch_ms(instant: Instant) -> u64 {
    let now = std::time::SystemTime::now();
    let at = match instant.checked_duration_since(Instant::now()) {
        Some(ahead) => now + ahead,
        None => now - Instant::now().saturating_duration_since(instant),
    };
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
