//! `metrics.json`: how a training run went, as the trainer writes it beside the model and the
//! report email and `lambda-vision train` show it.

use serde::{Deserialize, Serialize};

use crate::evaluation::Evaluation;
use crate::extract::SkippedImage;
use crate::head::{PenaltyScore, SolverReport, TrainConfig};

/// `metrics.json`: how the run went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// The head fitted on the training split, scored on the validation split (on the
    /// training split when nothing was held out).
    pub evaluation: Evaluation,
    pub evaluated_on: String,
    /// The penalty cross-validation chose, with its cross-validated accuracy and log-loss.
    pub chosen_penalty: PenaltyScore,
    /// Every penalty tried, strongest first.
    pub penalty_search: Vec<PenaltyScore>,
    pub solver: SolverReport,
    /// True when the shipped head was refitted on training and validation images together.
    pub refitted_with_validation: bool,
    pub images: ImageCounts,
    pub skipped: Vec<SkippedImage>,
    pub config: TrainConfig,
    pub timings: TrainingTimings,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageCounts {
    pub train: usize,
    pub validation: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainingTimings {
    pub extraction_ms: f64,
    pub head_training_ms: f64,
}
