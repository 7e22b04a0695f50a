//! `models/<id>/misclassified.json`: the held-out images a model got wrong that its report
//! shows, with their thumbnails (written by the trainer, read by the notifier).

use serde::{Deserialize, Serialize};
use vision::EvaluatedImage;

/// File name of the list under `models/<id>/`.
pub const MISCLASSIFIED_FILE: &str = "misclassified.json";

/// One shown mistake: the evaluation record and where its thumbnail is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Misclassified {
    #[serde(flatten)]
    pub image: EvaluatedImage,
    /// Key of the JPEG thumbnail in the results bucket.
    pub thumbnail_key: String,
}
