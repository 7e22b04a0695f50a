//! The JSON documents the pipeline reads and writes, one type per document and one home for
//! them all, below the handlers: a handler that needs another's document imports it from here,
//! never from the other handler. Where each lives in S3 is [`crate::layout`]'s business; how it
//! is read and written, [`crate::store`]'s (`get_json`, `put_json`, …).

mod checkpoint;
mod classify;
mod current_model;
mod job;
mod lease;
mod map;
mod misclassified;
mod notification;
mod prediction;
mod review;

pub use checkpoint::Checkpoint;
pub use classify::{
    ClassificationSummary, ClassifyShard, ClassifySpec, ClassifyTarget, JobRequest, LabelCount,
    ListedImage, PinnedModel, PredictionRow, ShardPredictions,
};
pub use current_model::{CurrentModel, ModelChange};
pub use job::{
    ErrorInfo, JobResult, JobSpec, JobStatus, MAX_RECIPIENTS, MAX_SPEC_BYTES, ModelInfo,
    ModelScore, PromotePolicy, Promotion, TrainingSummary, is_plausible_address, salvage_notify,
};
pub use lease::TrainerLease;
pub use map::{FeaturePackIndex, PackEntry, Shard, ShardError, ShardImage};
pub use misclassified::{MISCLASSIFIED_FILE, Misclassified, TRAINED_ON_FILE, TrainedOn};
pub use notification::{NotificationRecord, NotificationState};
pub use prediction::{IMAGENET_MODEL, NO_MODEL, PredictionDocument};
pub use review::ReviewEntry;

/// A document type the store can read and write as JSON. `NAME` says what it is in errors
/// ("job result in s3://… is not valid JSON"), so a user knows which file to look at.
pub trait Document: serde::Serialize + serde::de::DeserializeOwned {
    const NAME: &'static str;
}

impl Document for JobResult {
    const NAME: &'static str = "job result";
}
impl Document for PredictionDocument {
    const NAME: &'static str = "prediction";
}
impl Document for CurrentModel {
    const NAME: &'static str = "models/current.json";
}
impl Document for Checkpoint {
    const NAME: &'static str = "checkpoint";
}
impl Document for TrainerLease {
    const NAME: &'static str = "trainer lease";
}
impl Document for NotificationRecord {
    const NAME: &'static str = "notification record";
}
impl Document for Vec<Misclassified> {
    const NAME: &'static str = "misclassified.json";
}
impl Document for TrainedOn {
    const NAME: &'static str = "trained-on.json";
}
impl Document for FeaturePackIndex {
    const NAME: &'static str = "feature pack index";
}
impl Document for Shard {
    const NAME: &'static str = "shard";
}
impl Document for ClassifyShard {
    const NAME: &'static str = "reclassification shard";
}
impl Document for ShardPredictions {
    const NAME: &'static str = "shard predictions";
}
impl Document for ShardError {
    const NAME: &'static str = "shard error";
}
impl Document for ReviewEntry {
    const NAME: &'static str = "review entry";
}
impl Document for vision::HeadDocument {
    const NAME: &'static str = "head.json";
}
impl Document for vision::Metrics {
    const NAME: &'static str = "metrics.json";
}
