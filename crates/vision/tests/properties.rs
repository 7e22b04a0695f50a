//! Property tests: decode + preprocess never panic and always end in a tensor of the right
//! shape or a classified error, whatever the bytes; tiny valid images of any shape work.

use proptest::prelude::*;
use vision::{DecodeLimits, Preprocessor, decode};

/// Magic numbers of every supported format, so the generated junk reaches each decoder.
const PREFIXES: [&[u8]; 8] = [
    b"",
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x10\x00\x00\x00WEBPVP8 ",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
];

fn decode_then_preprocess(bytes: &[u8]) {
    let preprocessor = Preprocessor::new(224).unwrap();
    match decode(
        bytes,
        &DecodeLimits::default(),
        preprocessor.resize_short_side(),
    ) {
        Ok(image) => {
            assert!(image.width > 0 && image.height > 0);
            let tensor = preprocessor.tensor(&image.pixels).unwrap();
            assert_eq!(tensor.len(), 3 * 224 * 224);
            assert!(tensor.iter().all(|v| v.is_finite()));
        }
        Err(error) => {
            assert!(error.is_bad_image(), "{error}");
            assert!(!error.to_string().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(prefix in 0..PREFIXES.len(), body in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let mut bytes = PREFIXES[prefix].to_vec();
        bytes.extend(body);
        decode_then_preprocess(&bytes);
    }

    #[test]
    fn corrupted_real_images_never_panic(
        which in 0..2usize,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
    ) {
        let original: &[u8] = if which == 0 {
            include_bytes!("data/chelsea.jpg")
        } else {
            include_bytes!("data/chelsea_palette.png")
        };
        let mut bytes = original.to_vec();
        for (at, value) in flips {
            let at = at.index(bytes.len());
            bytes[at] = value;
        }
        bytes.truncate(cut.index(bytes.len()) + 1);
        decode_then_preprocess(&bytes);
    }

    #[test]
    fn any_small_valid_image_gives_a_tensor(width in 1u32..300, height in 1u32..300, format in 0..3usize) {
        let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let format = [image::ImageFormat::Png, image::ImageFormat::Jpeg, image::ImageFormat::Bmp][format];
        let mut bytes = std::io::Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        let preprocessor = Preprocessor::new(224).unwrap();
        let decoded = decode(bytes.get_ref(), &DecodeLimits::default(), preprocessor.resize_short_side()).unwrap();
        prop_assert_eq!((decoded.width, decoded.height), (width, height));
        let tensor = preprocessor.tensor(&decoded.pixels).unwrap();
        prop_assert_eq!(tensor.len(), 3 * 224 * 224);
    }
}
