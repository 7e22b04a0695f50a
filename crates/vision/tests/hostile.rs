//! Malformed and hostile inputs: each gets its own, specific error — never a panic.

use std::io::Cursor;
use std::path::PathBuf;

use image::{DynamicImage, ImageFormat as Encoding, RgbImage};
use vision::{DecodeLimits, ImageFormat, LimitKind, VisionError, decode};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name),
    )
    .unwrap()
}

fn decode_default(bytes: &[u8]) -> Result<vision::DecodedImage, VisionError> {
    decode(bytes, &DecodeLimits::default(), 256)
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    }))
    .write_to(&mut bytes, Encoding::Png)
    .unwrap();
    bytes.into_inner()
}

#[test]
fn empty_input() {
    assert!(matches!(decode_default(&[]), Err(VisionError::Empty)));
}

#[test]
fn content_decides_the_format_and_non_images_are_named() {
    let cases: [(&[u8], &str); 5] = [
        (
            b"<!DOCTYPE html><html><body>not an image</body></html>",
            "HTML",
        ),
        (
            b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"></svg>",
            "SVG",
        ),
        (b"<svg width=\"10\" height=\"10\"></svg>", "SVG"),
        (b"hello, this is a text file\n", "plain text"),
        (
            &[0x13, 0x37, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02],
            "13 37 de ad",
        ),
    ];
    for (bytes, expected) in cases {
        match decode_default(bytes) {
            Err(VisionError::UnsupportedFormat { detected }) => {
                assert!(
                    detected.contains(expected),
                    "{detected:?} should mention {expected:?}"
                )
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    // A deterministic xorshift stream, with and without real magic numbers in front.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let magics: [&[u8]; 7] = [
        b"",
        b"\xff\xd8\xff\xe0",
        b"\x89PNG\r\n\x1a\n",
        b"GIF89a",
        b"BM",
        b"II*\0",
        b"RIFF\0\0\0\0WEBPVP8 ",
    ];
    for round in 0..300 {
        let len = (next() % 4096) as usize;
        let mut bytes = magics[round % magics.len()].to_vec();
        bytes.extend((0..len).map(|_| next() as u8));
        if let Err(error) = decode_default(&bytes) {
            assert!(error.is_bad_image(), "{error}");
        }
    }
}

#[test]
fn truncated_files_say_so() {
    let jpeg = fixture("chelsea.jpg");
    let png = fixture("chelsea_256.png");
    for (name, bytes, format) in [
        ("jpeg", &jpeg[..jpeg.len() / 2], ImageFormat::Jpeg),
        ("png", &png[..png.len() / 2], ImageFormat::Png),
        ("png header only", &png[..40], ImageFormat::Png),
    ] {
        match decode_default(bytes) {
            Err(VisionError::Truncated { format: f, .. }) => assert_eq!(f, format, "{name}"),
            other => panic!("{name}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_png_crc_is_corruption() {
    let mut bytes = png(32, 32);
    // The IHDR chunk's CRC sits at bytes 29..33.
    bytes[30] ^= 0xff;
    match decode_default(&bytes) {
        Err(VisionError::Corrupt { format, detail }) => {
            assert_eq!(format, ImageFormat::Png);
            assert!(detail.to_lowercase().contains("crc"), "{detail}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn limits_carry_their_numbers() {
    let limits = DecodeLimits {
        max_encoded_bytes: 1000,
        ..DecodeLimits::default()
    };
    match decode(&fixture("chelsea.jpg"), &limits, 256) {
        Err(VisionError::LimitExceeded {
            what,
            limit,
            actual,
        }) => {
            assert_eq!(
                (what, limit, actual),
                (LimitKind::EncodedBytes, 1000, 35042)
            );
        }
        other => panic!("{other:?}"),
    }
    let error = decode_default(&png(20_000, 1)).unwrap_err();
    assert!(
        matches!(
            error,
            VisionError::LimitExceeded {
                what: LimitKind::Width,
                limit: 16_384,
                actual: 20_000
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("20000"), "{error}");
    let error = decode_default(&png(1, 20_000)).unwrap_err();
    assert!(
        matches!(
            error,
            VisionError::LimitExceeded {
                what: LimitKind::Height,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn extreme_but_legal_aspect_ratios_decode() {
    for (width, height) in [(1, 16_000), (16_000, 1)] {
        let decoded = decode_default(&png(width, height)).unwrap();
        assert_eq!((decoded.width, decoded.height), (width, height));
        let tensor = vision::Preprocessor::new(224)
            .unwrap()
            .tensor(&decoded.pixels)
            .unwrap();
        assert_eq!(tensor.len(), 3 * 224 * 224);
    }
}

#[test]
fn a_png_named_jpg_is_still_a_png() {
    // Names never reach the decoder, but the format is reported from content.
    let decoded = decode_default(&fixture("chelsea_256.png")).unwrap();
    assert_eq!(decoded.format, ImageFormat::Png);
}

#[test]
fn errors_have_stable_kinds() {
    assert_eq!(VisionError::Empty.kind(), "empty");
    let error = decode_default(b"plain words").unwrap_err();
    assert_eq!(error.kind(), "unsupported_format");
    assert!(error.is_bad_image());
}
