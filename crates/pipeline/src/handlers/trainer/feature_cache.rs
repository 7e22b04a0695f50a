//! The feature cache: one object per dataset image under `cache/<backbone>/<size>/<dataset>/`,
//! keyed by the image's ETag (see `layout::feature_cache_key`). It is also the job's checkpoint:
//! whatever is cached is never extracted again, by a retry, a continuation or the next job.
//!
//! The format is written by hand because it is four bytes of magic and a body: `LVF1` and
//! 1280 little-endian `f32`s for an image's features, or `LVS1` and the JSON of a
//! [`SkippedImage`] for an image that could not be used (so it is not retried either).

use futures::StreamExt;
use tracing::warn;
use vision::{Extracted, FEATURE_LEN, FeatureSet, SkippedImage};

use super::DatasetEntry;
use crate::error::{PipelineError, Result};
use crate::store::S3Store;

const FEATURES_MAGIC: &[u8; 4] = b"LVF1";
const SKIPPED_MAGIC: &[u8; 4] = b"LVS1";
const CONTENT_TYPE: &str = "application/octet-stream";

/// One decoded cache object.
#[derive(Debug, PartialEq)]
enum CacheEntry {
    Features(Vec<f32>),
    Skipped(SkippedImage),
}

fn encode(extracted: &Extracted) -> Result<Vec<u8>> {
    Ok(match extracted {
        Extracted::Features { features, .. } => {
            let mut bytes = FEATURES_MAGIC.to_vec();
            bytes.extend(features.iter().flat_map(|v| v.to_le_bytes()));
            bytes
        }
        Extracted::Skipped(skipped) => {
            let mut bytes = SKIPPED_MAGIC.to_vec();
            let json = serde_json::to_vec(skipped).map_err(|e| PipelineError::Encode {
                what: "skipped-image record",
                reason: e.to_string(),
            })?;
            bytes.extend(json);
            bytes
        }
    })
}

fn decode(bytes: &[u8]) -> Option<CacheEntry> {
    let (magic, body) = bytes.split_at(bytes.len().min(4));
    if magic == FEATURES_MAGIC && body.len() == FEATURE_LEN * 4 {
        let features = body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Some(CacheEntry::Features(features))
    } else if magic == SKIPPED_MAGIC {
        serde_json::from_slice(body).ok().map(CacheEntry::Skipped)
    } else {
        None
    }
}

/// Saves a batch of extraction results, `concurrency` PUTs at a time.
pub(super) async fn write(
    store: &S3Store,
    bucket: &str,
    batch: &[(&DatasetEntry, Extracted)],
    concurrency: usize,
) -> Result<()> {
    let results: Vec<Result<Option<String>>> = futures::stream::iter(batch)
        .map(|(entry, extracted)| async move {
            store
                .put(bucket, &entry.cache_key, encode(extracted)?, CONTENT_TYPE)
                .await
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<_>>>().map(|_| ())
}

/// The whole dataset's features from the cache, in `entries` order.
pub(super) async fn read(
    store: &S3Store,
    bucket: &str,
    entries: &[DatasetEntry],
) -> Result<FeatureSet> {
    let keys: Vec<String> = entries.iter().map(|e| e.cache_key.clone()).collect();
    let mut reads = Box::pin(store.get_many(bucket, keys, 16));
    let mut set = FeatureSet::default();
    let mut entries = entries.iter();
    while let Some((cache_key, object)) = reads.next().await {
        let Some(entry) = entries.next() else { break };
        match decode(&object?.bytes) {
            Some(CacheEntry::Features(features)) => {
                set.push(entry.key.clone(), entry.label.clone(), &features)
            }
            Some(CacheEntry::Skipped(skipped)) => set.skipped.push(skipped),
            None => {
                warn!(%cache_key, "unreadable cache entry");
                return Err(PipelineError::BadDocument {
                    what: "feature cache entry",
                    bucket: bucket.to_owned(),
                    key: cache_key,
                    reason: "unknown format".to_owned(),
                });
            }
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_decode_to_what_was_encoded_and_anything_else_is_refused() {
        let features: Vec<f32> = (0..FEATURE_LEN).map(|i| i as f32 * 0.5 - 3.0).collect();
        let extracted = Extracted::Features {
            key: "d/cat/a.jpg".to_owned(),
            label: "cat".to_owned(),
            features: features.clone(),
        };
        assert_eq!(
            decode(&encode(&extracted).unwrap()),
            Some(CacheEntry::Features(features))
        );
        let skipped = SkippedImage {
            key: "d/cat/x.jpg".to_owned(),
            label: "cat".to_owned(),
            kind: "corrupt".to_owned(),
            reason: "the JPEG data is corrupt".to_owned(),
        };
        assert_eq!(
            decode(&encode(&Extracted::Skipped(skipped.clone())).unwrap()),
            Some(CacheEntry::Skipped(skipped))
        );
        assert_eq!(decode(b"LVF1 too short"), None);
        assert_eq!(decode(b"LVS1 not json"), None);
        assert_eq!(decode(b""), None);
    }
}
