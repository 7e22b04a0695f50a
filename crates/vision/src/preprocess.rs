//! The torchvision ImageNet transform (`Resize(256)`, `CenterCrop(224)`, `ToTensor`, `Normalize`)
//! done in one resampling pass: we resize straight into the crop box, which gives the same
//! pixels as resizing the whole image and cropping afterwards, without the intermediate buffer.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;

use crate::error::{Result, VisionError};

/// ImageNet channel means and standard deviations, as in torchvision's training recipe.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Turns RGB images into the model's input tensor for a given square input size.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    input_size: u32,
    resize_short_side: u32,
    /// `(v / 255 - mean) / std` for every byte value, per channel: normalising becomes a lookup.
    lookup: [[f32; 256]; 3],
}

impl Preprocessor {
    /// `input_size` is the side of the square the network sees (224 for the bundled model);
    /// images are first resized so their shorter side is `input_size * 256 / 224`.
    pub fn new(input_size: u32) -> Result<Self> {
        if !(32..=1024).contains(&input_size) || !input_size.is_multiple_of(32) {
            return Err(VisionError::InputSize(input_size));
        }
        let mut lookup = [[0.0; 256]; 3];
        for (channel, table) in lookup.iter_mut().enumerate() {
            for (value, entry) in table.iter_mut().enumerate() {
                *entry = (value as f32 / 255.0 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel];
            }
        }
        Ok(Preprocessor {
            input_size,
            resize_short_side: (f64::from(input_size) * 256.0 / 224.0).round() as u32,
            lookup,
        })
    }

    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// The shorter side images are resized to before cropping: decoders need no more detail.
    pub fn resize_short_side(&self) -> u32 {
        self.resize_short_side
    }

    /// The `[1, 3, S, S]` float tensor (NCHW, row-major) for one image.
    pub fn tensor(&self, image: &RgbImage) -> Result<Vec<f32>> {
        let crop = self.crop(image)?;
        let plane = (self.input_size * self.input_size) as usize;
        let mut tensor = vec![0.0f32; 3 * plane];
        let (red, rest) = tensor.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        for (i, rgb) in crop.buffer().chunks_exact(3).enumerate() {
            red[i] = self.lookup[0][usize::from(rgb[0])];
            green[i] = self.lookup[1][usize::from(rgb[1])];
            blue[i] = self.lookup[2][usize::from(rgb[2])];
        }
        Ok(tensor)
    }

    /// Bilinear (antialiased, as Pillow does) resize of the centre crop to `S × S` RGB bytes.
    fn crop(&self, image: &RgbImage) -> Result<Image<'static>> {
        let (width, height) = image.dimensions();
        let size = self.input_size;
        let (resized_width, resized_height) =
            resized_dimensions(width, height, self.resize_short_side);
        let left = centre_offset(resized_width, size);
        let top = centre_offset(resized_height, size);
        let scale_x = f64::from(resized_width) / f64::from(width);
        let scale_y = f64::from(resized_height) / f64::from(height);
        let source =
            ImageRef::new(width, height, image.as_raw(), PixelType::U8x3).map_err(|e| {
                VisionError::Inference(format!("image buffer does not match its size: {e}"))
            })?;
        let mut crop = Image::new(size, size, PixelType::U8x3);
        let options = ResizeOptions::new()
            .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
            .crop(
                f64::from(left) / scale_x,
                f64::from(top) / scale_y,
                f64::from(size) / scale_x,
                f64::from(size) / scale_y,
            );
        Resizer::new()
            .resize(&source, &mut crop, &options)
            .map_err(|e| VisionError::Inference(format!("resize failed: {e}")))?;
        Ok(crop)
    }
}

/// torchvision's `Resize(short)`: the shorter side becomes `short`, the longer one is scaled and
/// truncated, as `int(short * long / short_side)` does in Python.
fn resized_dimensions(width: u32, height: u32, short: u32) -> (u32, u32) {
    let scaled = |long: u32, short_side: u32| {
        (u64::from(short) * u64::from(long) / u64::from(short_side.max(1))) as u32
    };
    if width <= height {
        (short, scaled(height, width))
    } else {
        (scaled(width, height), short)
    }
}

/// torchvision's `CenterCrop` offset: `int(round((length - size) / 2))`, rounding half to even.
fn centre_offset(length: u32, size: u32) -> u32 {
    let excess = length.saturating_sub(size);
    let half = excess / 2;
    if !excess.is_multiple_of(2) && !half.is_multiple_of(2) {
        half + 1
    } else {
        half
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_matches_torchvision_rounding() {
        assert_eq!(resized_dimensions(451, 300, 256), (384, 256));
        assert_eq!(resized_dimensions(300, 451, 256), (256, 384));
        assert_eq!(resized_dimensions(256, 256, 256), (256, 256));
        assert_eq!(resized_dimensions(1, 20_000, 256), (256, 5_120_000));
    }

    #[test]
    fn centre_offset_rounds_half_to_even() {
        assert_eq!(centre_offset(256, 224), 16);
        // (341 - 224) / 2 = 58.5 → 58; (343 - 224) / 2 = 59.5 → 60.
        assert_eq!(centre_offset(341, 224), 58);
        assert_eq!(centre_offset(343, 224), 60);
    }

    #[test]
    fn a_256_square_is_only_cropped() {
        let image = RgbImage::from_fn(256, 256, |x, y| {
            image::Rgb([x as u8, y as u8, (x ^ y) as u8])
        });
        let pre = Preprocessor::new(224).unwrap();
        let tensor = pre.tensor(&image).unwrap();
        let plane = 224 * 224;
        for (y, x) in [(0usize, 0usize), (5, 200), (223, 223)] {
            let source = image.get_pixel(x as u32 + 16, y as u32 + 16).0;
            for channel in 0..3 {
                let expected = pre.lookup[channel][usize::from(source[channel])];
                assert_eq!(tensor[channel * plane + y * 224 + x], expected);
            }
        }
    }

    #[test]
    fn extreme_aspect_ratios_stay_bounded() {
        let pre = Preprocessor::new(224).unwrap();
        for (w, h) in [(1, 5000), (5000, 1), (1, 1)] {
            let tensor = pre.tensor(&RgbImage::new(w, h)).unwrap();
            assert_eq!(tensor.len(), 3 * 224 * 224);
        }
    }

    #[test]
    fn rejects_odd_input_sizes() {
        assert!(matches!(
            Preprocessor::new(225),
            Err(VisionError::InputSize(225))
        ));
        assert!(matches!(
            Preprocessor::new(0),
            Err(VisionError::InputSize(0))
        ));
    }
}
