//! The documents of the feature cache and of the state machine's work list: a feature pack's
//! index, and one shard of a job.

use serde::{Deserialize, Serialize};
use vision::SkippedImage;

/// `cache/…/packs/<name>.json`: which image versions a feature pack holds, in its row order.
/// An entry with `skipped` set has no row (the image could not be used, and is not retried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeaturePackIndex {
    /// The pack's key in the results bucket.
    pub pack: String,
    pub entries: Vec<PackEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackEntry {
    pub etag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<SkippedImage>,
}

/// `checkpoints/<id>/shards/<n>.json`: the images one Map child extracts into one pack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shard {
    pub job_id: String,
    pub dataset: String,
    pub input_size: u32,
    pub images: Vec<ShardImage>,
}

/// `checkpoints/<id>/shard-errors/<n>.json`: the error of a shard's last failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardError {
    pub shard: String,
    pub kind: String,
    pub message: String,
}

/// One dataset image as listed when the job was prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardImage {
    pub key: String,
    pub label: String,
    pub etag: String,
    pub size: u64,
}
