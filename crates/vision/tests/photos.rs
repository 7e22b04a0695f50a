//! Real photos through the real bundled model: golden values stated once, checked every run.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::OnceLock;

use image::{DynamicImage, ImageFormat as Encoding};
use std::sync::Arc;

use vision::{Backbone, Classifier, DecodeLimits, ImageFormat};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn classifier() -> &'static Classifier {
    static CLASSIFIER: OnceLock<Classifier> = OnceLock::new();
    CLASSIFIER.get_or_init(|| {
        Classifier::imagenet(Arc::new(Backbone::bundled().expect("bundled model loads")))
    })
}

fn backbone() -> &'static Backbone {
    classifier().backbone()
}

fn top1(bytes: &[u8]) -> (usize, String, f32) {
    let result = classifier()
        .classify(bytes, &DecodeLimits::default(), 5)
        .expect("classifies");
    let best = &result.top[0];
    (best.index, best.label.clone(), best.score)
}

/// ImageNet's domestic cat classes: tabby, tiger cat, Persian, Siamese, Egyptian cat.
const CAT_CLASSES: std::ops::RangeInclusive<usize> = 281..=285;

#[test]
fn logits_match_onnxruntime_on_an_exactly_preprocessed_image() {
    let reference: serde_json::Value =
        serde_json::from_slice(&fixture("chelsea_256.logits.json")).unwrap();
    assert_eq!(
        reference["model_sha256"].as_str(),
        Some(backbone().sha256())
    );
    let decoded =
        vision::decode(&fixture("chelsea_256.png"), &DecodeLimits::default(), 256).unwrap();
    let inference = backbone().infer_image(&decoded.pixels).unwrap();
    let expected: Vec<f32> = serde_json::from_value(reference["logits"].clone()).unwrap();
    assert_eq!(inference.logits.len(), 1000);
    let worst = expected
        .iter()
        .zip(&inference.logits)
        .map(|(e, a)| (e - a).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-3, "max |Δlogit| vs onnxruntime = {worst}");
    let features: Vec<f32> = serde_json::from_value(reference["features_first16"].clone()).unwrap();
    for (e, a) in features.iter().zip(&inference.features) {
        assert!((e - a).abs() < 1e-3, "feature {a} vs onnxruntime {e}");
    }
    assert_eq!(inference.features.len(), vision::FEATURE_LEN);
}

#[test]
fn photos_get_the_same_top1_as_onnxruntime() {
    // Top-1 from onnxruntime on Pillow-preprocessed inputs (tests/data/README.md).
    assert_eq!(top1(&fixture("chelsea.jpg")).0, 285);
    assert_eq!(top1(&fixture("coffee.jpg")).1, "espresso");
    assert_eq!(top1(&fixture("astronaut.jpg")).0, 450);
}

#[test]
fn jpeg_variants_classify_like_the_original() {
    for name in [
        "chelsea_cmyk.jpg",
        "chelsea_exif6.jpg",
        "chelsea_palette.png",
    ] {
        let (index, label, score) = top1(&fixture(name));
        assert!(
            CAT_CLASSES.contains(&index),
            "{name}: top-1 {index} {label} ({score})"
        );
    }
    assert_eq!(top1(&fixture("coffee_progressive.jpg")).1, "espresso");
}

#[test]
fn exif_orientation_is_applied() {
    let stored = image::load_from_memory(&fixture("chelsea_exif6.jpg")).unwrap();
    assert_eq!(
        (stored.width(), stored.height()),
        (300, 451),
        "stored sideways"
    );
    let result = classifier()
        .classify(&fixture("chelsea_exif6.jpg"), &DecodeLimits::default(), 1)
        .unwrap();
    assert_eq!(
        (result.width, result.height),
        (451, 300),
        "reported upright"
    );
    let decoded =
        vision::decode(&fixture("chelsea_exif6.jpg"), &DecodeLimits::default(), 256).unwrap();
    assert!(
        decoded.pixels.width() > decoded.pixels.height(),
        "pixels upright"
    );
}

fn encode(image: &DynamicImage, format: Encoding) -> Vec<u8> {
    let mut bytes = Cursor::new(Vec::new());
    image.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

#[test]
fn every_format_and_pixel_layout_classifies_the_cat() {
    let chelsea = image::load_from_memory(&fixture("chelsea.jpg")).unwrap();
    let cases: Vec<(&str, Vec<u8>, ImageFormat)> = vec![
        (
            "png rgb8",
            encode(&chelsea, Encoding::Png),
            ImageFormat::Png,
        ),
        (
            "png gray8",
            encode(&DynamicImage::ImageLuma8(chelsea.to_luma8()), Encoding::Png),
            ImageFormat::Png,
        ),
        (
            "png gray+alpha",
            encode(
                &DynamicImage::ImageLumaA8(chelsea.to_luma_alpha8()),
                Encoding::Png,
            ),
            ImageFormat::Png,
        ),
        (
            "png rgba8",
            encode(&DynamicImage::ImageRgba8(chelsea.to_rgba8()), Encoding::Png),
            ImageFormat::Png,
        ),
        (
            "png rgb16",
            encode(&DynamicImage::ImageRgb16(chelsea.to_rgb16()), Encoding::Png),
            ImageFormat::Png,
        ),
        (
            "png rgba16",
            encode(
                &DynamicImage::ImageRgba16(chelsea.to_rgba16()),
                Encoding::Png,
            ),
            ImageFormat::Png,
        ),
        ("gif", encode(&chelsea, Encoding::Gif), ImageFormat::Gif),
        ("bmp", encode(&chelsea, Encoding::Bmp), ImageFormat::Bmp),
        ("tiff", encode(&chelsea, Encoding::Tiff), ImageFormat::Tiff),
        (
            "webp lossless",
            encode(&chelsea, Encoding::WebP),
            ImageFormat::WebP,
        ),
        (
            "jpeg gray",
            encode(
                &DynamicImage::ImageLuma8(chelsea.to_luma8()),
                Encoding::Jpeg,
            ),
            ImageFormat::Jpeg,
        ),
    ];
    for (name, bytes, format) in cases {
        let result = classifier()
            .classify(&bytes, &DecodeLimits::default(), 5)
            .unwrap();
        assert_eq!(result.format, format, "{name}");
        assert_eq!((result.width, result.height), (451, 300), "{name}");
        let best = &result.top[0];
        assert!(
            CAT_CLASSES.contains(&best.index),
            "{name}: top-1 {} {}",
            best.index,
            best.label
        );
    }
}

#[test]
fn animated_gif_uses_its_first_frame() {
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame, RgbaImage};
    let chelsea = image::load_from_memory(&fixture("chelsea.jpg"))
        .unwrap()
        .to_rgba8();
    let noise = RgbaImage::from_fn(451, 300, |x, y| {
        let v = ((x * 7919 + y * 104_729) % 251) as u8;
        image::Rgba([v, v.wrapping_mul(3), v.wrapping_mul(7), 255])
    });
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 30);
        for frame in [chelsea, noise] {
            encoder
                .encode_frame(Frame::from_parts(
                    frame,
                    0,
                    0,
                    Delay::from_numer_denom_ms(100, 1),
                ))
                .unwrap();
        }
    }
    let (index, label, _) = top1(&bytes);
    assert!(CAT_CLASSES.contains(&index), "top-1 {index} {label}");
}

#[test]
fn transparency_is_composited_on_white() {
    let transparent_black = image::RgbaImage::from_pixel(40, 30, image::Rgba([0, 0, 0, 0]));
    let half_red = image::RgbaImage::from_pixel(40, 30, image::Rgba([255, 0, 0, 128]));
    let decode = |image: image::RgbaImage| {
        let bytes = encode(&DynamicImage::ImageRgba8(image), Encoding::Png);
        vision::decode(&bytes, &DecodeLimits::default(), 256)
            .unwrap()
            .pixels
    };
    assert_eq!(decode(transparent_black).get_pixel(3, 3).0, [255, 255, 255]);
    assert_eq!(decode(half_red).get_pixel(3, 3).0, [255, 127, 127]);
}

#[test]
fn large_jpegs_are_decoded_at_reduced_scale_but_never_below_the_resize() {
    let chelsea = image::load_from_memory(&fixture("chelsea.jpg")).unwrap();
    let big = chelsea.resize_exact(3608, 2400, image::imageops::FilterType::Triangle);
    let bytes = encode(&big, Encoding::Jpeg);
    let decoded = vision::decode(&bytes, &DecodeLimits::default(), 256).unwrap();
    assert_eq!((decoded.width, decoded.height), (3608, 2400));
    assert_eq!(
        decoded.pixels.dimensions(),
        (451, 300),
        "1/8 scale in the DCT domain"
    );
    let (index, label, _) = top1(&bytes);
    assert!(CAT_CLASSES.contains(&index), "top-1 {index} {label}");
}
