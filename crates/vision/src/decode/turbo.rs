//! libjpeg-turbo as the JPEG decoder, only where it decodes exactly as jpeg-decoder would.

use super::DecodeLimits;

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
pub(super) fn decode_jpeg_turbo(
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
pub(super) struct JpegLayout {
    pub(super) component_ids: Vec<u8>,
}

impl JpegLayout {
    /// `None` unless the file is one libjpeg-turbo decodes exactly as jpeg-decoder would, in
    /// memory bounded like jpeg-decoder's:
    /// - a baseline, extended or progressive Huffman frame (SOF0, SOF1, SOF2);
    /// - EXIF, if any, in one APP1 before the frame (jpeg-decoder's `read_info` sees only that);
    /// - a sequential frame's first scan has every component: otherwise libjpeg-turbo buffers
    ///   the whole image's coefficients at full resolution, whatever the scale;
    /// - no stray restart or TEM markers between segments (jpeg-decoder rejects them).
    pub(super) fn read(bytes: &[u8]) -> Option<Self> {
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
