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
use turbo::decode_jpeg_turbo;

#[cfg(test)]
mod tests;
mod turbo;

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
