//! `checkpoints/<id>/progress.json`: how far a job that handed itself on had come.

use serde::{Deserialize, Serialize};

/// Informational: the feature cache holds the real progress, so a lost or unreadable
/// checkpoint costs nothing but the duration figure of the report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub continuation: u32,
    pub images_total: usize,
    pub images_done: usize,
    /// Wall time of all invocations so far, so the result reports the whole job's duration.
    #[serde(default)]
    pub elapsed_ms: f64,
    pub updated_at: String,
}
