//! The report's gallery of mistakes: thumbnails of up to [`MAX_SHOWN`] misclassified held-out
//! images (the most confident mistakes first), made by the trainer, which may read the dataset,
//! so the notifier reads only the results bucket. A thumbnail that cannot be made is left out;
//! it never fails the job.

use std::collections::HashMap;

use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use tracing::warn;
use vision::{DecodeLimits, EvaluatedImage};

use crate::documents::{MISCLASSIFIED_FILE, Misclassified};
use crate::error::Result;
use crate::layout;
use crate::store::S3Store;

/// Most misclassified images shown in a report.
pub const MAX_SHOWN: usize = 12;
/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 120;

/// The mistakes to show: wrong predictions, most confident first (then by key, so the choice
/// is stable).
pub fn worst_mistakes(evaluated: &[EvaluatedImage]) -> Vec<&EvaluatedImage> {
    let mut wrong: Vec<&EvaluatedImage> = evaluated.iter().filter(|e| !e.is_correct()).collect();
    wrong.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
    wrong.truncate(MAX_SHOWN);
    wrong
}

/// Reads each shown mistake from the input bucket — the version that was extracted (`If-Match`
/// on its ETag; a replaced or oversized image is left out) — and writes its thumbnail, then the
/// list. `versions` maps each dataset key to its extracted ETag and size.
pub(super) async fn write(
    store: &S3Store,
    input_bucket: &str,
    results_bucket: &str,
    job_id: &str,
    (evaluated, versions): (&[EvaluatedImage], &HashMap<String, (String, u64)>),
) -> Result<()> {
    let limits = DecodeLimits::default();
    let mut listed = Vec::new();
    for (index, image) in worst_mistakes(evaluated).into_iter().enumerate() {
        let Some((etag, size)) = versions.get(&image.key) else {
            continue;
        };
        if limits.check_encoded_len(*size).is_err() {
            continue;
        }
        let object = match store.get_if_match(input_bucket, &image.key, etag).await {
            Ok(Some(object)) => object,
            Err(error) if error.is_transient() => return Err(error),
            Ok(None) | Err(_) => {
                warn!(key = %image.key, "no thumbnail: the image changed or is gone");
                continue;
            }
        };
        let thumbnail = match tokio::task::spawn_blocking(move || thumbnail(&object.bytes)).await {
            Ok(Some(jpeg)) => jpeg,
            _ => {
                warn!(key = %image.key, "no thumbnail: the image does not decode");
                continue;
            }
        };
        let thumbnail_key =
            layout::model_file_key(job_id, &format!("misclassified/{index:02}.jpg"));
        store
            .put(results_bucket, &thumbnail_key, thumbnail, "image/jpeg")
            .await?;
        listed.push(Misclassified {
            image: image.clone(),
            thumbnail_key,
        });
    }
    let key = layout::model_file_key(job_id, MISCLASSIFIED_FILE);
    store.put_json(results_bucket, &key, &listed).await
}

/// A JPEG [`THUMBNAIL_SIDE`] on its longer side, or `None` for an image that does not
/// decode within the default limits.
pub fn thumbnail(bytes: &[u8]) -> Option<Vec<u8>> {
    let decoded = vision::decode(bytes, &DecodeLimits::default(), THUMBNAIL_SIDE).ok()?;
    let (width, height) = fit(decoded.pixels.width(), decoded.pixels.height());
    // Small images are scaled up too: a 28-pixel digit is unreadable at its own size.
    let small = image::imageops::resize(
        &decoded.pixels,
        width,
        height,
        image::imageops::FilterType::Triangle,
    );
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 80)
        .write_image(&small, width, height, image::ExtendedColorType::Rgb8)
        .ok()?;
    Some(jpeg)
}

/// The size of a `width` × `height` image scaled to fill a [`THUMBNAIL_SIDE`] square.
fn fit(width: u32, height: u32) -> (u32, u32) {
    let longer = width.max(height).max(1);
    let scale = f64::from(THUMBNAIL_SIDE) / f64::from(longer);
    (
        ((f64::from(width) * scale).round() as u32).max(1),
        ((f64::from(height) * scale).round() as u32).max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluated(key: &str, truth: &str, predicted: &str, score: f32) -> EvaluatedImage {
        EvaluatedImage {
            key: key.to_owned(),
            truth: truth.to_owned(),
            predicted: predicted.to_owned(),
            score,
        }
    }

    #[test]
    fn the_most_confident_mistakes_are_shown_first_and_at_most_twelve() {
        let mut images = vec![evaluated("right", "a", "a", 1.0)];
        for i in 0..20 {
            images.push(evaluated(&format!("k{i:02}"), "a", "b", i as f32 / 20.0));
        }
        let shown = worst_mistakes(&images);
        assert_eq!(shown.len(), MAX_SHOWN);
        assert_eq!(shown[0].key, "k19");
        assert!(shown.windows(2).all(|w| w[0].score >= w[1].score));
        assert!(shown.iter().all(|e| !e.is_correct()));
    }

    #[test]
    fn thumbnails_fit_the_square_and_bad_bytes_give_none() {
        let png = {
            let image = image::RgbImage::from_pixel(40, 20, image::Rgb([200, 10, 10]));
            let mut bytes = std::io::Cursor::new(Vec::new());
            image.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
            bytes.into_inner()
        };
        let jpeg = thumbnail(&png).expect("a thumbnail");
        let small = image::load_from_memory(&jpeg).unwrap();
        assert_eq!(
            (small.width(), small.height()),
            (THUMBNAIL_SIDE, THUMBNAIL_SIDE / 2)
        );
        assert_eq!(thumbnail(b"not an image"), None);
    }
}
