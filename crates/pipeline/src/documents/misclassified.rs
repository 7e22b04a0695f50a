//! What a model was trained and scored on, beside its files: `models/<id>/misclassified.json`,
//! the held-out images it got wrong that its report shows, with their thumbnails (written by
//! the trainer, read by the notifier); and `models/<id>/trained-on.json`, the image versions its
//! shipped head was fitted on, so a later job can score it on images it has not seen.

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

/// File name of the trained-on list under `models/<id>/`.
pub const TRAINED_ON_FILE: &str = "trained-on.json";

/// The ETags of every image version the shipped head was fitted on. ETags identify content
/// (an MD5 for single-part uploads), so a copy of an image under another key is recognised.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainedOn {
    pub etags: Vec<String>,
}
