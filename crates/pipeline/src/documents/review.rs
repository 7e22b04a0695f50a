//! `review/<path>.json`: an image whose prediction is not confident, queued for a person to
//! label (active learning). Nothing under `review/` triggers a function.

use serde::{Deserialize, Serialize};
use vision::Prediction;

/// What `lambda-vision review list` shows of one uncertain prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewEntry {
    /// `images/<path>` in the input bucket.
    pub source_key: String,
    pub source_etag: Option<String>,
    pub model_id: String,
    /// The top labels with their scores, best first.
    pub top: Vec<Prediction>,
    /// The top label's threshold, which its score did not reach.
    pub threshold: f32,
    /// Key of the full prediction in the results bucket.
    pub prediction_key: String,
    pub created_at: String,
}

impl ReviewEntry {
    /// The top label's score: how sure the model was (lower is less sure).
    pub fn top_score(&self) -> f32 {
        self.top.first().map_or(0.0, |p| p.score)
    }
}
