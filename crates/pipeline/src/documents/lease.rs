//! `checkpoints/<id>/lease.json`: which trainer invocation runs a job now.

use serde::{Deserialize, Serialize};

/// Held by one invocation of one continuation until its deadline. Lambda retries an invocation
/// with the same request id, so a retry takes its own lease back; a duplicate delivery or a
/// direct invoke has another id and finds the lease held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainerLease {
    pub continuation: u32,
    /// The Lambda request id of the holder (`local` outside Lambda).
    pub holder: String,
    /// The holder's deadline, in milliseconds since the Unix epoch; free after it.
    pub expires_at_ms: u64,
}
