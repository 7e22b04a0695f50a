//! lambda-vision's ML core: untrusted bytes → upright RGB → MobileNetV2 features → ImageNet
//! classes or a trained head. No AWS and no async here: the Lambda functions and the CLI share
//! this code.

pub mod backbone;
pub mod bundle;
pub mod classifier;
pub mod confidence;
pub mod decode;
pub mod error;
pub mod evaluation;
pub mod extract;
pub mod head;
pub mod metrics;
pub mod preprocess;

pub use backbone::{
    BUNDLED_LABELS, BUNDLED_MODEL, BUNDLED_MODEL_SHA256, BUNDLED_NNEF, Backbone, Classification,
    DEFAULT_INPUT_SIZE, FEATURE_LEN, ImageInference, Inference, Prediction, Timings, softmax,
    top_k,
};
pub use bundle::{HeadDocument, TrainedBundle, export_onnx, score_head, train_bundle};
pub use classifier::Classifier;
pub use confidence::{EvaluatedImage, ThresholdSource, Thresholds, choose_thresholds};
pub use decode::{DecodeLimits, DecodedImage, ImageFormat, decode};
pub use error::{LimitKind, Result, VisionError};
pub use evaluation::{ClassMetrics, Evaluation, evaluate};
pub use extract::{
    ExtractOptions, Extracted, FeatureSet, LabeledImage, Progress, SkippedImage, SourceFailure,
    SourceItem, extract_each, extract_features,
};
pub use head::{
    DEFAULT_PENALTIES, Head, PenaltyScore, SolverReport, TrainConfig, TrainedHead, train_head,
};
pub use metrics::{ImageCounts, Metrics, TrainingTimings};
pub use preprocess::{IMAGENET_MEAN, IMAGENET_STD, Preprocessor};
