//! libjpeg-turbo against jpeg-decoder, and which files each one gets.

use super::turbo::{JpegLayout, decode_jpeg_turbo};
use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// jpeg-decoder's pixels for the same request, as the fallback makes them.
fn pure_rust(bytes: &[u8], short_side: u16) -> (u32, u32, Vec<u8>) {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().unwrap();
    let info = decoder.info().unwrap();
    let request = if info.width <= info.height {
        (short_side, u16::MAX)
    } else {
        (u16::MAX, short_side)
    };
    let (w, h) = decoder.scale(request.0, request.1).unwrap();
    (w.into(), h.into(), decoder.decode().unwrap())
}

fn full_size(bytes: &[u8]) -> (u32, u32) {
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().unwrap();
    let info = decoder.info().unwrap();
    (info.width.into(), info.height.into())
}

#[test]
fn libjpeg_turbo_decodes_what_jpeg_decoder_decodes_at_the_same_scale() {
    // coffee.jpg is 600×400: a request for 200 lets both decode at 1/2 (300×200).
    for (name, short_side) in [("coffee.jpg", 200), ("chelsea.jpg", 256)] {
        let bytes = fixture(name);
        let (w, h, expected) = pure_rust(&bytes, short_side);
        let full = full_size(&bytes);
        let turbo = decode_jpeg_turbo(&bytes, full, (w, h), &DecodeLimits::default())
            .unwrap_or_else(|| panic!("{name}: libjpeg-turbo declined"));
        assert_eq!(turbo.len(), expected.len(), "{name}");
        // Two IDCT implementations: the same picture, within a few levels per channel
        // (measured: 2.15 for coffee.jpg at 1/2, where the scaled IDCTs differ most).
        let mean_diff = turbo
            .iter()
            .zip(&expected)
            .map(|(&a, &b)| f64::from(a.abs_diff(b)))
            .sum::<f64>()
            / turbo.len() as f64;
        eprintln!("{name}: mean difference {mean_diff:.2}");
        assert!(mean_diff < 3.0, "{name}: mean difference {mean_diff}");
    }
}

/// SOI, then `(marker, payload)` segments, as a JPEG's header is laid out.
fn header(segments: &[(u8, &[u8])]) -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8];
    for (marker, payload) in segments {
        bytes.extend([0xFF, *marker]);
        bytes.extend(u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
        bytes.extend(*payload);
    }
    bytes
}

const SOF_YCBCR: &[u8] = &[8, 0, 16, 0, 16, 3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1];
const EXIF: &[u8] = b"Exif\0\0II*\0";

#[test]
fn libjpeg_turbo_is_used_only_where_both_decoders_agree() {
    let all_components = [3, 1, 0, 2, 0x11, 3, 0x11, 0, 63, 0];
    let ids = |bytes: &[u8]| JpegLayout::read(bytes).map(|layout| layout.component_ids);
    let plain = header(&[(0xE1, EXIF), (0xC0, SOF_YCBCR), (0xDA, &all_components)]);
    assert_eq!(ids(&plain), Some(vec![1, 2, 3]));
    // EXIF after the frame: jpeg-decoder's header pass would not see the orientation.
    let late_exif = header(&[(0xC0, SOF_YCBCR), (0xE1, EXIF), (0xDA, &all_components)]);
    assert_eq!(ids(&late_exif), None);
    let two_exifs = header(&[
        (0xE1, EXIF),
        (0xE1, EXIF),
        (0xC0, SOF_YCBCR),
        (0xDA, &all_components),
    ]);
    assert_eq!(ids(&two_exifs), None);
    // A sequential frame scanned one component at a time: full-resolution buffers.
    let one_component = [1, 1, 0, 0, 63, 0];
    let split_scans = header(&[(0xC0, SOF_YCBCR), (0xDA, &one_component)]);
    assert_eq!(ids(&split_scans), None);
    // ...which a progressive frame always has anyway, in both decoders.
    let progressive = header(&[(0xC2, SOF_YCBCR), (0xDA, &one_component)]);
    assert_eq!(ids(&progressive), Some(vec![1, 2, 3]));
    // Arithmetic coding, a stray restart marker, a truncated segment.
    assert_eq!(
        ids(&header(&[(0xC9, SOF_YCBCR), (0xDA, &all_components)])),
        None
    );
    let mut stray = header(&[(0xC0, SOF_YCBCR)]);
    stray.extend([0xFF, 0xD3]);
    assert_eq!(ids(&stray), None);
    assert_eq!(ids(&plain[..plain.len() - 4]), None);
    // Ids other than 1, 2, 3 leave the colour space to each decoder's own rules: declined.
    let rgb_ids = [
        8, 0, 16, 0, 16, 3, b'R', 0x11, 0, b'G', 0x11, 1, b'B', 0x11, 1,
    ];
    let rgb = header(&[(0xC0, &rgb_ids), (0xDA, &all_components)]);
    let full = (16, 16);
    assert!(decode_jpeg_turbo(&rgb, full, full, &DecodeLimits::default()).is_none());
}

#[test]
fn what_libjpeg_turbo_would_only_warn_about_goes_to_jpeg_decoder() {
    let bytes = fixture("chelsea.jpg");
    let full = full_size(&bytes);
    let limits = DecodeLimits::default();
    assert!(decode_jpeg_turbo(&bytes, full, full, &limits).is_some());
    // Cut mid-scan: libjpeg-turbo pads with grey and warns; we take no picture from it.
    let truncated = &bytes[..bytes.len() * 2 / 3];
    assert!(decode_jpeg_turbo(truncated, full, full, &limits).is_none());
    assert!(matches!(
        decode(truncated, &limits, 224),
        Err(VisionError::Truncated { .. })
    ));
    // CMYK needs a colour conversion libjpeg-turbo does not make.
    let cmyk = fixture("chelsea_cmyk.jpg");
    let cmyk_size = full_size(&cmyk);
    assert!(decode_jpeg_turbo(&cmyk, cmyk_size, cmyk_size, &limits).is_none());
    // A scale jpeg-decoder would not choose is declined, not silently changed.
    assert!(decode_jpeg_turbo(&bytes, full, (300, 200), &limits).is_none());
    // So is a decode over the pixel-buffer limit.
    let tight = DecodeLimits {
        max_decoded_bytes: 1000,
        ..DecodeLimits::default()
    };
    assert!(decode_jpeg_turbo(&bytes, full, full, &tight).is_none());
}
