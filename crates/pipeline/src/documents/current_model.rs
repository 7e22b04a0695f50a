//! `models/current.json`: which trained model classification uses now, and how it got there.
//! Every version of it is also kept, append-only, as `model-history/<sequence>.json`.

use serde::{Deserialize, Serialize};

/// The pointer the trainer (or `lambda-vision models`) moves and the upload trigger follows.
/// It is also one entry of the model history: the change that made `model_id` serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentModel {
    pub model_id: String,
    /// Key of the model's `head.json` in the results bucket.
    pub head_key: String,
    pub updated_at: String,
    /// This change's place in the history, from 1; 0 in pointers written before there was one.
    #[serde(default)]
    pub sequence: u64,
    /// The model that served before (none for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_model_id: Option<String>,
    #[serde(default)]
    pub action: ModelChange,
    /// Who made the change: a job id, or `cli` for `lambda-vision models`.
    #[serde(default)]
    pub changed_by: String,
    #[serde(default)]
    pub reason: String,
}

/// Why the serving model changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelChange {
    /// A training job's model won (or was told to take over by `promote: always`).
    #[default]
    Trained,
    /// `lambda-vision models promote <id>`.
    Promoted,
    /// `lambda-vision models rollback`: back to the model this one replaced.
    RolledBack,
}
