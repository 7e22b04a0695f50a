//! Any bytes as a job spec (`jobs/<id>.json`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(error) = pipeline::documents::JobSpec::parse(bytes) {
        assert!(!error.to_string().is_empty());
    }
});
