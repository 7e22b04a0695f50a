//! lambda-vision's ML core: untrusted bytes → upright RGB → MobileNetV2 features and ImageNet
//! classes. No AWS and no async here: the Lambda functions and the CLI share this code.

pub mod backbone;
pub mod decode;
pub mod error;
pub mod preprocess;

pub use backbone::{
    BUNDLED_LABELS, BUNDLED_MODEL, Backbone, Classification, DEFAULT_INPUT_SIZE, FEATURE_LEN,
    Inference, Prediction, Timings, softmax, top_k,
};
pub use decode::{DecodeLimits, DecodedImage, ImageFormat, decode};
pub use error::{LimitKind, Result, VisionError};
pub use preprocess::{IMAGENET_MEAN, IMAGENET_STD, Preprocessor};
