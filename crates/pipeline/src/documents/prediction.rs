//! `predictions/<path>.json`: what the upload trigger says about one image.

use serde::{Deserialize, Serialize};
use vision::Prediction;

use super::ErrorInfo;

/// The `model_id` of predictions made with the backbone's own ImageNet classes: what serves
/// while no trained model does.
pub const IMAGENET_MODEL: &str = "imagenet";

/// The `model_id` of an error prediction made without a model: the serving model could not
/// be loaded, or the upload trigger gave up on the image.
pub const NO_MODEL: &str = "none";

/// One image version's classification, or why it could not be classified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionDocument {
    /// `images/<path>` in the input bucket.
    pub source_key: String,
    /// The ETag of the image version this prediction is for.
    pub source_etag: Option<String>,
    /// `imagenet` or the job id of the trained model.
    pub model_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<Prediction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings_ms: Option<vision::Timings>,
    /// The top label's confidence threshold, for a trained head that has thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Whether the top label's score reaches `threshold`; a prediction that does not is also
    /// queued under `review/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confident: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl PredictionDocument {
    /// A prediction for one image version with nothing in it yet: the caller adds the classes
    /// or the error.
    pub fn empty(source_key: String, source_etag: Option<String>, model_id: String) -> Self {
        PredictionDocument {
            source_key,
            source_etag,
            model_id,
            top: Vec::new(),
            width: None,
            height: None,
            timings_ms: None,
            threshold: None,
            confident: None,
            error: None,
        }
    }
}
