//! Any text as an S3 event's form-encoded key; valid UTF-8 keys must round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::event::{decode_key, encode_key};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = decode_key(text);
        assert_eq!(decode_key(&encode_key(text)).as_deref(), Ok(text));
    }
});
