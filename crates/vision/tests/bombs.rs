//! Decompression bombs: headers that declare enormous images must fail before any large
//! allocation. This file is its own test binary with one test, so the allocation counter sees
//! only the decodes below.

#[path = "support/peak_heap.rs"]
mod peak_heap;

use std::sync::atomic::Ordering;

use peak_heap::{CURRENT, PEAK};
use vision::{DecodeLimits, LimitKind, VisionError, decode};

#[global_allocator]
static ALLOCATOR: peak_heap::PeakCounter = peak_heap::PeakCounter;

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend(kind);
    out.extend(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

/// A valid PNG header declaring `width × height` RGB pixels, followed by a tiny IDAT.
fn png_bomb(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

/// A baseline JPEG header (SOI, DQT, SOF0, DHT, SOS) declaring `width × height`.
fn jpeg_bomb(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xff, 0xd8];
    out.extend([0xff, 0xdb, 0x00, 0x43, 0x00]);
    out.extend([1u8; 64]);
    out.extend([0xff, 0xc0, 0x00, 0x11, 0x08]);
    out.extend(height.to_be_bytes());
    out.extend(width.to_be_bytes());
    out.extend([0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x00, 0x03, 0x11, 0x00]);
    // One DC table with a single 1-bit code, enough for the header to parse.
    out.extend([0xff, 0xc4, 0x00, 0x14, 0x00, 0x01]);
    out.extend([0u8; 15]);
    out.push(0x00);
    out.extend([
        0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x3f, 0x00,
    ]);
    out.extend([0u8; 16]);
    out.extend([0xff, 0xd9]);
    out
}

fn gif_bomb(width: u16, height: u16) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend(width.to_le_bytes());
    out.extend(height.to_le_bytes());
    out.extend([0x00, 0x00, 0x00]);
    out.extend([0x2c, 0, 0, 0, 0]);
    out.extend(width.to_le_bytes());
    out.extend(height.to_le_bytes());
    out.extend([0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b]);
    out
}

fn bmp_bomb(width: i32, height: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend(70u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend(54u32.to_le_bytes());
    out.extend(40u32.to_le_bytes());
    out.extend(width.to_le_bytes());
    out.extend(height.to_le_bytes());
    out.extend(1u16.to_le_bytes());
    out.extend(24u16.to_le_bytes());
    out.extend([0u8; 24]);
    out.extend([0u8; 16]);
    out
}

#[test]
fn declared_giants_fail_fast_without_allocating() {
    let cases: Vec<(&str, Vec<u8>, LimitKind)> = vec![
        (
            "png 100000×100000",
            png_bomb(100_000, 100_000),
            LimitKind::Width,
        ),
        (
            "png 16000×16000",
            png_bomb(16_000, 16_000),
            LimitKind::Pixels,
        ),
        (
            "png 9000×4000 (decoded bytes)",
            png_bomb(9_000, 4_000),
            LimitKind::DecodedBytes,
        ),
        (
            "jpeg 65500×65500",
            jpeg_bomb(65_500, 65_500),
            LimitKind::Width,
        ),
        (
            "jpeg 10000×10000",
            jpeg_bomb(10_000, 10_000),
            LimitKind::Pixels,
        ),
        (
            "gif 65535×65535",
            gif_bomb(65_535, 65_535),
            LimitKind::Width,
        ),
        (
            "bmp 60000×60000",
            bmp_bomb(60_000, 60_000),
            LimitKind::Width,
        ),
    ];
    let limits = DecodeLimits::default();
    for (name, bytes, expected) in cases {
        let baseline = CURRENT.load(Ordering::SeqCst);
        PEAK.store(baseline, Ordering::SeqCst);
        let result = decode(&bytes, &limits, 256);
        let extra = PEAK.load(Ordering::SeqCst) - baseline;
        match result {
            Err(VisionError::LimitExceeded { what, .. }) => assert_eq!(what, expected, "{name}"),
            other => panic!(
                "{name} ({} bytes): expected a limit error, got {other:?}",
                bytes.len()
            ),
        }
        assert!(
            extra < 4 << 20,
            "{name}: allocated {extra} bytes before failing"
        );
    }
    assert!(
        png_bomb(100_000, 100_000).len() < 70,
        "the PNG bomb is a tiny file"
    );
}
