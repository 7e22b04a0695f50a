//! Decoding untrusted image bytes into an RGB buffer, small enough to preprocess cheaply.
//!
//! Everything here assumes the bytes are hostile: the format is sniffed from the content, the
//! declared dimensions are checked against [`DecodeLimits`] before any pixel buffer is allocated,
//! and a panic inside a third-party decoder becomes [`VisionError::DecoderPanicked`].

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{LimitKind, Result, VisionError};

/// The formats lambda-vision accepts, always detected from the file's magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Jpeg,
    Png,
    WebP,
    Gif,
    Bmp,
    Tiff,
}

impl ImageFormat {
    /// Detects the format from the first bytes of the file; the file name is never consulted.
    pub fn sniff(bytes: &[u8]) -> Result<Self> {
        let detected = image::guess_format(bytes).map_err(|_| VisionError::UnsupportedFormat {
            detected: describe_unknown(bytes),
        })?;
        Ok(match detected {
            image::ImageFormat::Jpeg => ImageFormat::Jpeg,
            image::ImageFormat::Png => ImageFormat::Png,
            image::ImageFormat::WebP => ImageFormat::WebP,
            image::ImageFormat::Gif => ImageFormat::Gif,
            image::ImageFormat::Bmp => ImageFormat::Bmp,
            image::ImageFormat::Tiff => ImageFormat::Tiff,
            other => {
                return Err(VisionError::UnsupportedFormat {
                    detected: format!("{other:?}"),
                });
            }
        })
    }

    fn to_image_format(self) -> image::ImageFormat {
        match self {
            ImageFormat::Jpeg => image::ImageFormat::Jpeg,
            ImageFormat::Png => image::ImageFormat::Png,
            ImageFormat::WebP => image::ImageFormat::WebP,
            ImageFormat::Gif => image::ImageFormat::Gif,
            ImageFormat::Bmp => image::ImageFormat::Bmp,
            ImageFormat::Tiff => image::ImageFormat::Tiff,
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageFormat::Jpeg => "JPEG",
            ImageFormat::Png => "PNG",
            ImageFormat::WebP => "WebP",
            ImageFormat::Gif => "GIF",
            ImageFormat::Bmp => "BMP",
            ImageFormat::Tiff => "TIFF",
        })
    }
}

/// Names what an unrecognised file looks like, so the error tells the uploader what they sent.
fn describe_unknown(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(512)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with("<svg") || (trimmed.starts_with("<?xml") && text.contains("<svg")) {
        "SVG (vector images are not supported)".to_owned()
    } else if trimmed.starts_with("<!doctype html") || trimmed.starts_with("<html") {
        "HTML document".to_owned()
    } else if trimmed.starts_with('<') {
        "XML or HTML text".to_owned()
    } else if head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "plain text".to_owned()
    } else {
        let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("unknown, starting with bytes {}", hex.join(" "))
    }
}

/// Bounds on what an untrusted image may cost. The defaults keep one decode under ~100 MB of
/// memory, which fits a 256 MB Lambda next to the model, while accepting photos up to 40 MP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted file, in bytes (default 32 MiB).
    pub max_encoded_bytes: u64,
    /// Widest accepted image, in pixels, as declared in the header (default 16384).
    pub max_width: u32,
    /// Tallest accepted image, in pixels, as declared in the header (default 16384).
    pub max_height: u32,
    /// Most pixels accepted (width × height, default 40 M): bounds decoder work and the
    /// coefficient memory of progressive JPEGs even when we decode at reduced scale.
    pub max_pixels: u64,
    /// Largest pixel buffer a decoder may produce, in bytes (default 96 MiB).
    pub max_decoded_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_encoded_bytes: 32 << 20,
            max_width: 16_384,
            max_height: 16_384,
            max_pixels: 40_000_000,
            max_decoded_bytes: 96 << 20,
        }
    }
}

impl DecodeLimits {
    /// Rejects an encoded file by size alone, e.g. from an S3 event before downloading it.
    pub fn check_encoded_len(&self, len: u64) -> Result<()> {
        check(LimitKind::EncodedBytes, self.max_encoded_bytes, len)
    }

    fn check_dimensions(&self, width: u32, height: u32) -> Result<()> {
        check(LimitKind::Width, self.max_width.into(), width.into())?;
        check(LimitKind::Height, self.max_height.into(), height.into())?;
        check(
            LimitKind::Pixels,
            self.max_pixels,
            u64::from(width) * u64::from(height),
        )
    }

    fn check_decoded_bytes(&self, bytes: u64) -> Result<()> {
        check(LimitKind::DecodedBytes, self.max_decoded_bytes, bytes)
    }
}

fn check(what: LimitKind, limit: u64, actual: u64) -> Result<()> {
    if actual > limit {
        Err(VisionError::LimitExceeded {
            what,
            limit,
            actual,
        })
    } else {
        Ok(())
    }
}

/// A decoded image, already oriented upright and flattened to 8-bit RGB.
#[derive(Debug, Clone)]
pub struct DecodedImage {
    /// The pixels; for JPEG possibly reduced in the DCT domain (never below the requested size).
    pub pixels: RgbImage,
    /// The image's displayed width (after EXIF orientation) at full resolution.
    pub width: u32,
    /// The image's displayed height (after EXIF orientation) at full resolution.
    pub height: u32,
    pub format: ImageFormat,
}

/// Decodes `bytes` within `limits`. `min_short_side` lets JPEG decoding skip detail the model
/// never sees: the result's shorter side is at least `min_short_side` (or the full image).
///
/// Transparent pixels are composited on white (so a logo on a transparent background looks as
/// it does in a browser); animated GIFs give their first frame; EXIF orientation is applied.
pub fn decode(bytes: &[u8], limits: &DecodeLimits, min_short_side: u32) -> Result<DecodedImage> {
    if bytes.is_empty() {
        return Err(VisionError::Empty);
    }
    limits.check_encoded_len(bytes.len() as u64)?;
    let format = ImageFormat::sniff(bytes)?;
    let decoded = catch_unwind(AssertUnwindSafe(|| match format {
        ImageFormat::Jpeg => decode_jpeg_scaled(bytes, limits, min_short_side)
            .transpose()
            .unwrap_or_else(|| decode_generic(bytes, format, limits)),
        _ => decode_generic(bytes, format, limits),
    }));
    decoded.unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic without a message".to_owned());
        Err(VisionError::DecoderPanicked { format, detail })
    })
}

/// The JPEG fast path: decode at 1/2, 1/4 or 1/8 scale in the DCT domain, which makes a 12 MP
/// photo several times cheaper. jpeg-decoder reads the header (size, limits, EXIF, the scale),
/// libjpeg-turbo decodes; jpeg-decoder decodes what libjpeg-turbo does not take cleanly.
/// Returns `Ok(None)` for what neither handles (CMYK, 16-bit, exotic coding), which the general
/// decoder then takes.
fn decode_jpeg_scaled(
    bytes: &[u8],
    limits: &DecodeLimits,
    min_short_side: u32,
) -> Result<Option<DecodedImage>> {
    use jpeg_decoder::PixelFormat;

    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    match decoder.read_info() {
        Ok(()) => {}
        Err(jpeg_decoder::Error::Unsupported(_)) => return Ok(None),
        Err(e) => return Err(jpeg_error(e)),
    }
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (full_width, full_height) = (u32::from(info.width), u32::from(info.height));
    limits.check_dimensions(full_width, full_height)?;
    let channels = match info.pixel_format {
        PixelFormat::L8 => 1,
        PixelFormat::RGB24 => 3,
        PixelFormat::L16 | PixelFormat::CMYK32 => return Ok(None),
    };
    // Only the shorter axis matters: ask for it and let the longer one follow.
    let wanted = u16::try_from(min_short_side).unwrap_or(u16::MAX);
    let request = if info.width <= info.height {
        (wanted, u16::MAX)
    } else {
        (u16::MAX, wanted)
    };
    let (width, height) = decoder.scale(request.0, request.1).map_err(jpeg_error)?;
    let (width, height) = (u32::from(width), u32::from(height));
    let decoded_bytes = u64::from(width) * u64::from(height) * channels;
    limits.check_decoded_bytes(decoded_bytes)?;
    let (data, channels) =
        match decode_jpeg_turbo(bytes, (full_width, full_height), (width, height), limits) {
            Some(rgb) => (rgb, 3),
            None => {
                decoder.set_max_decoding_buffer_size(
                    usize::try_from(limits.max_decoded_bytes).unwrap_or(usize::MAX),
                );
                let data = match decoder.decode() {
                    Ok(data) => data,
                    Err(jpeg_decoder::Error::Unsupported(_)) => return Ok(None),
                    Err(e) => return Err(jpeg_error(e)),
                };
                if data.len() as u64 != decoded_bytes {
                    return Err(VisionError::Corrupt {
                        format: ImageFormat::Jpeg,
                        detail: format!(
                            "decoder returned {} bytes for a {width}×{height} image",
                            data.len()
                        ),
                    });
                }
                (data, channels)
            }
        };
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    let image = if channels == 1 {
        image::GrayImage::from_raw(width, height, data).map(DynamicImage::ImageLuma8)
    } else {
        RgbImage::from_raw(width, height, data).map(DynamicImage::ImageRgb8)
    };
    let Some(mut image) = image else {
        return Ok(None);
    };
    image.apply_orientation(orientation);
    let (width, height) = oriented(full_width, full_height, orientation);
    Ok(Some(DecodedImage {
        pixels: image.into_rgb8(),
        width,
        height,
        format: ImageFormat::Jpeg,
    }))
}

/// Most progressive scans a JPEG may have before libjpeg-turbo gives up on it (and jpeg-decoder
/// gets it): cameras write about 10, a hostile file thousands, each a pass over the image.
const TURBO_SCAN_LIMIT: u32 = 500;

/// The fast path of the fast path: libjpeg-turbo (SIMD Huffman decoding and IDCT) at the scale
/// jpeg-decoder chose, about twice as fast as jpeg-decoder on a 12 MP photo. Only a clean
/// decode of a file both decoders read alike counts: anything libjpeg-turbo reports, even a
/// warning such as extraneous bytes, and anything it does not do the same way (see
/// [`JpegLayout::read`]; CMYK, lossless, another scale or colour space) returns `None`, and
/// jpeg-decoder decodes that file as before. libjpeg-turbo is more lenient in a few ways
/// (standard Huffman tables when a file has none, four tables in a baseline file, out-of-order
/// scan components), so such files now decode, as they do in browsers and Pillow.
fn decode_jpeg_turbo(
    bytes: &[u8],
    (full_width, full_height): (u32, u32),
    (width, height): (u32, u32),
    limits: &DecodeLimits,
) -> Option<Vec<u8>> {
    use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat, ScalingFactor};

    let layout = JpegLayout::read(bytes)?;
    let mut decompressor = Decompressor::new().ok()?;
    let header = decompressor.read_header(bytes).ok()?;
    let same_image = (header.width, header.height) == (full_width as usize, full_height as usize);
    // The colour space both decoders agree on: libjpeg-turbo trusts JFIF and Adobe markers
    // before component ids, jpeg-decoder the ids first.
    let same_colours = match layout.component_ids.as_slice() {
        [_] => matches!(header.colorspace, Colorspace::Gray),
        [1, 2, 3] => matches!(header.colorspace, Colorspace::YCbCr),
        _ => false,
    };
    if !same_image || !same_colours || header.is_lossless {
        return None;
    }
    let scale = [8, 4, 2, 1]
        .into_iter()
        .map(|denominator| ScalingFactor::new(1, denominator))
        .find(|&scale| {
            let scaled = header.scaled(scale);
            (scaled.width, scaled.height) == (width as usize, height as usize)
        })?;
    limits
        .check_decoded_bytes(u64::from(width) * u64::from(height) * 3)
        .ok()?;
    decompressor.set_scaling_factor(scale).ok()?;
    decompressor.set_scan_limit(TURBO_SCAN_LIMIT).ok()?;
    let (width, height) = (width as usize, height as usize);
    let mut pixels = vec![0; width * height * 3];
    let image = Image {
        pixels: pixels.as_mut_slice(),
        width,
        pitch: width * 3,
        height,
        format: PixelFormat::RGB,
    };
    decompressor.decompress(bytes, image).ok()?;
    Some(pixels)
}

/// What the marker segments before the first scan say, for the cases where libjpeg-turbo and
/// jpeg-decoder would not decode alike. Hand-written: neither decoder exposes these facts.
struct JpegLayout {
    component_ids: Vec<u8>,
}

impl JpegLayout {
    /// `None` unless the file is one libjpeg-turbo decodes exactly as jpeg-decoder would, in
    /// memory bounded like jpeg-decoder's:
    /// - a baseline, extended or progressive Huffman frame (SOF0, SOF1, SOF2);
    /// - EXIF, if any, in one APP1 before the frame (jpeg-decoder's `read_info` sees only that);
    /// - a sequential frame's first scan has every component: otherwise libjpeg-turbo buffers
    ///   the whole image's coefficients at full resolution, whatever the scale;
    /// - no stray restart or TEM markers between segments (jpeg-decoder rejects them).
    fn read(bytes: &[u8]) -> Option<Self> {
        let mut rest = bytes.strip_prefix(&[0xFF, 0xD8])?;
        let mut frame: Option<(u8, Vec<u8>)> = None;
        let mut exif_segments = 0;
        loop {
            let marker_at = rest.iter().position(|&b| b != 0xFF)?;
            if marker_at == 0 {
                return None;
            }
            let marker = rest[marker_at];
            let length = rest.get(marker_at + 1..marker_at + 3)?;
            let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
            let payload = rest.get(marker_at + 3..marker_at + 1 + length)?;
            rest = &rest[marker_at + 1 + length..];
            match marker {
                0xC0..=0xC2 => {
                    let count = usize::from(*payload.get(5)?);
                    let ids = (0..count)
                        .map(|c| payload.get(6 + 3 * c).copied())
                        .collect::<Option<Vec<u8>>>()?;
                    frame = Some((marker, ids));
                }
                // Lossless, hierarchical, arithmetic (and its DAC), DNL: jpeg-decoder's own.
                0xC3..=0xCF | 0xDC if marker != 0xC4 => return None,
                0xE1 if payload.starts_with(b"Exif\0") => {
                    exif_segments += 1;
                    if frame.is_some() || exif_segments > 1 {
                        return None;
                    }
                }
                0xDA => {
                    let (sof, component_ids) = frame?;
                    let scan_components = usize::from(*payload.first()?);
                    let sequential = sof != 0xC2;
                    if sequential && scan_components < component_ids.len() {
                        return None;
                    }
                    return Some(JpegLayout { component_ids });
                }
                0x00 | 0x01 | 0xD0..=0xD9 => return None,
                _ => {}
            }
        }
    }
}

fn jpeg_error(error: jpeg_decoder::Error) -> VisionError {
    let format = ImageFormat::Jpeg;
    match error {
        jpeg_decoder::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            VisionError::Truncated {
                format,
                detail: "the file ends before the image data does".to_owned(),
            }
        }
        jpeg_decoder::Error::Format(detail) if is_truncation(&detail) => {
            VisionError::Truncated { format, detail }
        }
        jpeg_decoder::Error::Unsupported(feature) => VisionError::UnsupportedFeature {
            format,
            detail: format!("{feature:?}"),
        },
        other => VisionError::Corrupt {
            format,
            detail: other.to_string(),
        },
    }
}

fn is_truncation(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    detail.contains("eof") || detail.contains("end of file") || detail.contains("unexpected end")
}

/// Every other format (and unusual JPEGs) through the `image` crate, at full resolution.
fn decode_generic(
    bytes: &[u8],
    format: ImageFormat,
    limits: &DecodeLimits,
) -> Result<DecodedImage> {
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format.to_image_format());
    // Our own checks below carry the numbers; the crate's limit is a backstop for buffers a
    // decoder allocates internally (TIFF strips, GIF frames) beyond the output image.
    let mut backstop = image::Limits::default();
    backstop.max_alloc = Some(limits.max_decoded_bytes.saturating_mul(2));
    reader.limits(backstop);
    let mut decoder = reader.into_decoder().map_err(|e| image_error(e, format))?;
    let (full_width, full_height) = decoder.dimensions();
    limits.check_dimensions(full_width, full_height)?;
    limits.check_decoded_bytes(decoder.total_bytes())?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| image_error(e, format))?;
    image.apply_orientation(orientation);
    let (width, height) = oriented(full_width, full_height, orientation);
    Ok(DecodedImage {
        pixels: flatten_on_white(image),
        width,
        height,
        format,
    })
}

fn image_error(error: image::ImageError, format: ImageFormat) -> VisionError {
    use image::ImageError;
    match error {
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            VisionError::Truncated {
                format,
                detail: "the file ends before the image data does".to_owned(),
            }
        }
        ImageError::Unsupported(e) => VisionError::UnsupportedFeature {
            format,
            detail: e.to_string(),
        },
        ImageError::Limits(e) => VisionError::DecoderLimit {
            format,
            detail: e.to_string(),
        },
        other => {
            let detail = other.to_string();
            if is_truncation(&detail) {
                VisionError::Truncated { format, detail }
            } else {
                VisionError::Corrupt { format, detail }
            }
        }
    }
}

/// Displayed size after an EXIF orientation: rotations by 90° swap the axes.
fn oriented(width: u32, height: u32, orientation: Orientation) -> (u32, u32) {
    use Orientation::*;
    match orientation {
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => (height, width),
        NoTransforms | Rotate180 | FlipHorizontal | FlipVertical => (width, height),
    }
}

/// Composites transparent pixels on white and drops everything but 8-bit RGB.
fn flatten_on_white(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let alpha = u32::from(a);
        let blend =
            |channel: u8| ((u32::from(channel) * alpha + 255 * (255 - alpha) + 127) / 255) as u8;
        image::Rgb([blend(r), blend(g), blend(b)])
    })
}

#[cfg(test)]
mod tests {
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
}
