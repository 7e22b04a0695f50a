//! Any bytes as an uploaded image: decode (with the default limits) and preprocess.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vision::{DecodeLimits, Preprocessor, decode};

fuzz_target!(|bytes: &[u8]| {
    let preprocessor = Preprocessor::new(224).expect("224 is a valid input size");
    if let Ok(image) = decode(bytes, &DecodeLimits::default(), preprocessor.resize_short_side()) {
        let tensor = preprocessor.tensor(&image.pixels).expect("a decoded image preprocesses");
        assert_eq!(tensor.len(), 3 * 224 * 224);
    }
});
