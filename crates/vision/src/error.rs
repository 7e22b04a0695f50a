//! One error type for the whole ML core, so callers can map every failure to a stable `kind`.

use std::path::PathBuf;

use crate::decode::ImageFormat;

/// Which limit an image broke; see [`crate::DecodeLimits`] for the defaults and why they exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    EncodedBytes,
    Width,
    Height,
    Pixels,
    DecodedBytes,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LimitKind::EncodedBytes => "encoded size in bytes",
            LimitKind::Width => "width in pixels",
            LimitKind::Height => "height in pixels",
            LimitKind::Pixels => "pixel count (width × height)",
            LimitKind::DecodedBytes => "decoded size in bytes",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("the image is empty (0 bytes); upload the file again")]
    Empty,

    #[error(
        "unsupported image format ({detected}); send JPEG, PNG, WebP, GIF, BMP or TIFF — the format is read from the file's content, not its name"
    )]
    UnsupportedFormat { detected: String },

    #[error(
        "image {what} is {actual}, above the limit of {limit}; shrink the image or raise the limit"
    )]
    LimitExceeded {
        what: LimitKind,
        limit: u64,
        actual: u64,
    },

    #[error("decoding the {format} image would exceed the memory limit: {detail}")]
    DecoderLimit { format: ImageFormat, detail: String },

    #[error("the {format} data is truncated: {detail}; upload the complete file")]
    Truncated { format: ImageFormat, detail: String },

    #[error("the {format} data is corrupt: {detail}")]
    Corrupt { format: ImageFormat, detail: String },

    #[error("the {format} file uses a feature the decoder does not support: {detail}")]
    UnsupportedFeature { format: ImageFormat, detail: String },

    #[error(
        "the {format} decoder crashed on this file ({detail}); the file is almost certainly malformed"
    )]
    DecoderPanicked { format: ImageFormat, detail: String },

    #[error("cannot read model file {path}: {source}")]
    ModelIo {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "cannot load the ONNX model: {0}; is it a MobileNetV2 export with outputs `features` and `logits`?"
    )]
    ModelLoad(String),

    #[error("inference failed: {0}")]
    Inference(String),

    #[error("the label list has {labels} names but the model has {classes} classes")]
    LabelCount { labels: usize, classes: usize },

    #[error("invalid training setting `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    #[error("the dataset needs at least two labels (folders), found {found:?}")]
    NotEnoughLabels { found: Vec<String> },

    #[error(
        "label `{label}` has {usable} usable images, fewer than the minimum of {minimum}; add images or lower min_images_per_class"
    )]
    TooFewImages {
        label: String,
        usable: usize,
        minimum: usize,
    },

    #[error("invalid head: {0}")]
    InvalidHead(String),

    #[error("head training failed: {0}")]
    HeadTraining(String),

    #[error(
        "the model was trained on backbone {expected} but the running backbone is {actual}; retrain the head or load the matching backbone"
    )]
    BackboneMismatch { expected: String, actual: String },

    #[error("cannot read or write {path}: {source}")]
    BundleIo {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is not a valid model bundle file: {detail}")]
    BundleFormat { path: PathBuf, detail: String },

    #[error(
        "invalid input size {0}: use a multiple of 32 between 32 and 1024 (the model was trained at 224)"
    )]
    InputSize(u32),
}

impl VisionError {
    /// A stable machine-readable name for the error, used in error documents and CLI output.
    pub fn kind(&self) -> &'static str {
        match self {
            VisionError::Empty => "empty",
            VisionError::UnsupportedFormat { .. } => "unsupported_format",
            VisionError::LimitExceeded { .. } | VisionError::DecoderLimit { .. } => {
                "limit_exceeded"
            }
            VisionError::Truncated { .. } => "truncated",
            VisionError::Corrupt { .. } => "corrupt",
            VisionError::UnsupportedFeature { .. } => "unsupported_feature",
            VisionError::DecoderPanicked { .. } => "decoder_panicked",
            VisionError::ModelIo { .. } => "model_io",
            VisionError::ModelLoad(_) => "model_load",
            VisionError::Inference(_) => "inference",
            VisionError::LabelCount { .. } => "label_count",
            VisionError::InputSize(_) => "input_size",
            VisionError::InvalidConfig { .. } => "invalid_config",
            VisionError::NotEnoughLabels { .. } => "not_enough_labels",
            VisionError::TooFewImages { .. } => "too_few_images",
            VisionError::InvalidHead(_) => "invalid_head",
            VisionError::HeadTraining(_) => "head_training",
            VisionError::BackboneMismatch { .. } => "backbone_mismatch",
            VisionError::BundleIo { .. } => "bundle_io",
            VisionError::BundleFormat { .. } => "bundle_format",
        }
    }

    /// True when the image itself is at fault (retrying the same bytes cannot succeed).
    pub fn is_bad_image(&self) -> bool {
        matches!(
            self,
            VisionError::Empty
                | VisionError::UnsupportedFormat { .. }
                | VisionError::LimitExceeded { .. }
                | VisionError::DecoderLimit { .. }
                | VisionError::Truncated { .. }
                | VisionError::Corrupt { .. }
                | VisionError::UnsupportedFeature { .. }
                | VisionError::DecoderPanicked { .. }
        )
    }
}

pub type Result<T, E = VisionError> = std::result::Result<T, E>;
