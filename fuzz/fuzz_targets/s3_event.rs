//! Any bytes as the JSON payload of an S3 event notification.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(event) = serde_json::from_slice::<pipeline::S3Event>(bytes) {
        for object in pipeline::event::created_objects(&event).into_iter().flatten() {
            let _ = pipeline::layout::InputKey::parse(&object.key);
            let _ = pipeline::layout::parse_result_key(&object.key);
        }
    }
});
