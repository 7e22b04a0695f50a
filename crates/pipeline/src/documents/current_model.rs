//! `models/current.json`: which trained model classification uses now.

use serde::{Deserialize, Serialize};

/// The pointer the trainer moves when a job succeeds and the upload trigger follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurrentModel {
    pub model_id: String,
    /// Key of the model's `head.json` in the results bucket.
    pub head_key: String,
    pub updated_at: String,
}
