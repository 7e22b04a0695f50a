//! The feature cache: packed objects under `cache/<backbone>/<size>/<dataset>/packs/`, each
//! holding the features of a batch of images (a chunk of the in-Lambda path, a shard of the
//! state machine), with a small JSON index per pack naming the image versions (ETags) inside.
//! It is also the job's checkpoint: whatever is cached is never extracted again, by a retry, a
//! continuation, a Map child or the next job. Training reads one object per pack, not one per
//! image.
//!
//! The pack format is written by hand because it is four bytes of magic, a row count and the
//! rows: `LVP1`, a little-endian `u32`, then 1280 little-endian `f32`s per row, in the order of
//! the index's entries that have no `skipped` record.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use vision::{Extracted, FEATURE_LEN, FeatureSet, SkippedImage};

use super::DatasetEntry;
use crate::documents::{FeaturePackIndex, PackEntry};
use crate::error::{PipelineError, Result};
use crate::layout;
use crate::store::{self, S3Store};

const PACK_MAGIC: &[u8; 4] = b"LVP1";
const PACK_CONTENT_TYPE: &str = "application/octet-stream";
/// Index reads in flight at once (small JSON objects).
const INDEX_READS: usize = 16;
/// Pack reads in flight at once (each up to a few MB).
const PACK_READS: usize = 8;

/// One dataset's cache for one backbone and input size.
pub(super) struct FeatureCache<'a> {
    store: &'a S3Store,
    bucket: &'a str,
    prefix: String,
}

/// Where each cached image version is, by ETag: built from the pack indexes.
#[derive(Default)]
pub(super) struct CacheIndex {
    slots: HashMap<String, Slot>,
    /// Rows each pack holds according to its index, checked against the pack when it is read.
    rows: HashMap<Arc<str>, usize>,
}

enum Slot {
    Row { pack: Arc<str>, row: usize },
    Skipped(SkippedImage),
}

impl CacheIndex {
    pub(super) fn contains(&self, etag: &str) -> bool {
        self.slots.contains_key(etag)
    }

    /// Adds a pack's entries. For an ETag in two packs, features win over a skipped record
    /// (an image deleted while one batch read it is still usable from the other).
    pub(super) fn add(&mut self, index: &FeaturePackIndex) {
        let pack: Arc<str> = Arc::from(index.pack.as_str());
        let mut row = 0;
        for entry in &index.entries {
            let slot = match &entry.skipped {
                Some(skipped) => Slot::Skipped(skipped.clone()),
                None => {
                    row += 1;
                    Slot::Row {
                        pack: Arc::clone(&pack),
                        row: row - 1,
                    }
                }
            };
            let keep_features = matches!(slot, Slot::Skipped(_))
                && matches!(self.slots.get(&entry.etag), Some(Slot::Row { .. }));
            if !keep_features {
                self.slots.insert(entry.etag.clone(), slot);
            }
        }
        self.rows.insert(pack, row);
    }
}

impl<'a> FeatureCache<'a> {
    pub(super) fn new(store: &'a S3Store, bucket: &'a str, prefix: String) -> Self {
        FeatureCache {
            store,
            bucket,
            prefix,
        }
    }

    /// Reads every pack index of the dataset: one LIST page per 1,000 packs and one GET per
    /// pack.
    pub(super) async fn index(&self) -> Result<CacheIndex> {
        let listed = self
            .store
            .list(
                self.bucket,
                &layout::feature_pack_index_prefix(&self.prefix),
            )
            .await?;
        let keys: Vec<String> = listed
            .into_iter()
            .map(|object| object.key)
            .filter(|key| key.ends_with(layout::JSON_SUFFIX))
            .collect();
        let mut reads = Box::pin(self.store.get_many(self.bucket, keys, INDEX_READS));
        let mut index = CacheIndex::default();
        while let Some((key, object)) = reads.next().await {
            let pack = store::parse::<FeaturePackIndex>(self.bucket, &key, &object?.bytes)?;
            index.add(&pack);
        }
        Ok(index)
    }

    /// Saves a batch of extraction results as one pack (the pack, then its index) and returns
    /// the index written. An image version in the batch twice is stored once, with features if
    /// either copy has them. Rows are in ETag order, not in the order the workers finished, so a
    /// retried batch writes the same pack.
    pub(super) async fn write_pack(
        &self,
        batch: &[(&DatasetEntry, Extracted)],
    ) -> Result<FeaturePackIndex> {
        let skipped = |extracted: &Extracted| matches!(extracted, Extracted::Skipped(_));
        let mut unique: Vec<&(&DatasetEntry, Extracted)> = batch.iter().collect();
        unique.sort_by(|(a, x), (b, y)| (&a.etag, skipped(x)).cmp(&(&b.etag, skipped(y))));
        unique.dedup_by(|(a, _), (b, _)| a.etag == b.etag);
        let layout: Vec<(&str, bool)> = unique
            .iter()
            .map(|(entry, extracted)| (entry.etag.as_str(), skipped(extracted)))
            .collect();
        let name = pack_name(&layout);
        let mut rows = Vec::new();
        let mut entries = Vec::with_capacity(unique.len());
        for (entry, extracted) in unique {
            let skipped = match extracted {
                Extracted::Features { features, .. } => {
                    rows.push(features.as_slice());
                    None
                }
                Extracted::Skipped(skipped) => Some(skipped.clone()),
            };
            entries.push(PackEntry {
                etag: entry.etag.clone(),
                skipped,
            });
        }
        let pack_key = layout::feature_pack_key(&self.prefix, &name);
        self.store
            .put(
                self.bucket,
                &pack_key,
                encode_pack(&rows)?,
                PACK_CONTENT_TYPE,
            )
            .await?;
        let index = FeaturePackIndex {
            pack: pack_key,
            entries,
        };
        let index_key = layout::feature_pack_index_key(&self.prefix, &name);
        self.store.put_json(self.bucket, &index_key, &index).await?;
        Ok(index)
    }

    /// The features of `entries`, in their order, from the packs that hold them: one GET per
    /// pack, each decoded and copied into the set, so memory is the set plus a few packs.
    /// Fails with [`PipelineError::FeaturesMissing`] when an entry has no cached features.
    pub(super) async fn read(
        &self,
        index: &CacheIndex,
        entries: &[DatasetEntry],
    ) -> Result<FeatureSet> {
        let missing: Vec<&DatasetEntry> = entries
            .iter()
            .filter(|e| !index.contains(&e.etag))
            .collect();
        if let Some(first) = missing.first() {
            return Err(PipelineError::FeaturesMissing {
                missing: missing.len(),
                total: entries.len(),
                first: first.key.clone(),
            });
        }
        let mut set = FeatureSet::default();
        // For each pack, which of its rows go to which row of the set.
        let mut wanted: HashMap<Arc<str>, Vec<(usize, usize)>> = HashMap::new();
        for entry in entries {
            match index.slots.get(&entry.etag) {
                Some(Slot::Row { pack, row }) => {
                    wanted
                        .entry(Arc::clone(pack))
                        .or_default()
                        .push((*row, set.keys.len()));
                    set.keys.push(entry.key.clone());
                    set.labels.push(entry.label.clone());
                }
                Some(Slot::Skipped(skipped)) => set.skipped.push(SkippedImage {
                    key: entry.key.clone(),
                    label: entry.label.clone(),
                    ..skipped.clone()
                }),
                None => {}
            }
        }
        set.features = vec![0.0; set.keys.len() * FEATURE_LEN];
        let keys: Vec<String> = wanted.keys().map(|k| k.to_string()).collect();
        let mut reads = Box::pin(self.store.get_many(self.bucket, keys, PACK_READS));
        while let Some((key, object)) = reads.next().await {
            let object = object?;
            let rows = decode_pack(&object.bytes).ok_or_else(|| PipelineError::BadDocument {
                what: "feature pack",
                bucket: self.bucket.to_owned(),
                key: key.clone(),
                reason: "not an LVP1 pack of 1280-value rows".to_owned(),
            })?;
            let holds = rows.len() / FEATURE_LEN;
            let indexed = index.rows.get(key.as_str()).copied().unwrap_or(0);
            if holds != indexed {
                return Err(PipelineError::BadDocument {
                    what: "feature pack",
                    bucket: self.bucket.to_owned(),
                    key,
                    reason: format!(
                        "it holds {holds} rows and its index names {indexed}; delete the pack and its index, and they are extracted again"
                    ),
                });
            }
            for &(row, destination) in wanted.get(key.as_str()).into_iter().flatten() {
                let Some(source) = rows.get(row * FEATURE_LEN..(row + 1) * FEATURE_LEN) else {
                    return Err(PipelineError::BadDocument {
                        what: "feature pack",
                        bucket: self.bucket.to_owned(),
                        key,
                        reason: format!("its index names row {row}, which it does not hold"),
                    });
                };
                set.features[destination * FEATURE_LEN..(destination + 1) * FEATURE_LEN]
                    .copy_from_slice(source);
            }
        }
        Ok(set)
    }
}

/// A pack's name: a hash of the ETags it holds and which of them are skipped records, i.e. of
/// its whole layout, so the same batch always lands on the same key and two batches whose
/// packs would differ in rows never share one (two writers interleaving pack and index could
/// otherwise pair an index with another layout's rows).
fn pack_name(layout: &[(&str, bool)]) -> String {
    let mut hasher = Sha256::new();
    for (etag, skipped) in layout {
        hasher.update(etag.as_bytes());
        hasher.update(if *skipped { b"\ns\n" } else { b"\nf\n" });
    }
    hasher.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn encode_pack(rows: &[&[f32]]) -> Result<Vec<u8>> {
    let count = u32::try_from(rows.len()).map_err(|_| PipelineError::Encode {
        what: "feature pack",
        reason: format!("{} rows do not fit one pack", rows.len()),
    })?;
    let mut bytes = Vec::with_capacity(8 + rows.len() * FEATURE_LEN * 4);
    bytes.extend_from_slice(PACK_MAGIC);
    bytes.extend_from_slice(&count.to_le_bytes());
    for row in rows {
        bytes.extend(row.iter().flat_map(|v| v.to_le_bytes()));
    }
    Ok(bytes)
}

/// The rows of a pack, flattened; `None` for anything that is not a well-formed pack.
fn decode_pack(bytes: &[u8]) -> Option<Vec<f32>> {
    let magic = bytes.get(..4)?;
    let count = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?) as usize;
    let body = bytes.get(8..)?;
    if magic != PACK_MAGIC || body.len() != count.checked_mul(FEATURE_LEN * 4)? {
        return None;
    }
    Some(
        body.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_decode_to_what_was_encoded_and_anything_else_is_refused() {
        let first: Vec<f32> = (0..FEATURE_LEN).map(|i| i as f32 * 0.5 - 3.0).collect();
        let second: Vec<f32> = (0..FEATURE_LEN).map(|i| -(i as f32)).collect();
        let bytes = encode_pack(&[&first, &second]).unwrap();
        let rows = decode_pack(&bytes).unwrap();
        assert_eq!(&rows[..FEATURE_LEN], first.as_slice());
        assert_eq!(&rows[FEATURE_LEN..], second.as_slice());
        assert_eq!(decode_pack(&encode_pack(&[]).unwrap()), Some(Vec::new()));
        assert_eq!(decode_pack(&bytes[..bytes.len() - 1]), None, "a short pack");
        let mut wrong_count = bytes.clone();
        wrong_count[4] = 3;
        assert_eq!(
            decode_pack(&wrong_count),
            None,
            "a count the body does not hold"
        );
        assert_eq!(
            decode_pack(b"LVF1\0\0\0\0"),
            None,
            "the old per-image format"
        );
        assert_eq!(decode_pack(b""), None);
    }

    #[test]
    fn pack_names_depend_on_the_whole_layout() {
        let (a, b) = (("\"a\"", false), ("\"b\"", false));
        let name = pack_name(&[a, b]);
        assert_eq!(name.len(), 32);
        assert_eq!(name, pack_name(&[a, b]));
        assert_ne!(name, pack_name(&[b, a]));
        assert_ne!(name, pack_name(&[a]));
        assert_ne!(
            name,
            pack_name(&[a, ("\"b\"", true)]),
            "a skipped image changes the rows"
        );
        assert_ne!(
            pack_name(&[("ab", false), ("c", false)]),
            pack_name(&[("a", false), ("bc", false)])
        );
    }

    #[test]
    fn the_index_maps_rows_past_skipped_entries() {
        let skipped = SkippedImage {
            key: "d/cat/x.jpg".to_owned(),
            label: "cat".to_owned(),
            kind: "corrupt".to_owned(),
            reason: "the JPEG data is corrupt".to_owned(),
        };
        let mut index = CacheIndex::default();
        index.add(&FeaturePackIndex {
            pack: "p".to_owned(),
            entries: vec![
                PackEntry {
                    etag: "a".to_owned(),
                    skipped: None,
                },
                PackEntry {
                    etag: "x".to_owned(),
                    skipped: Some(skipped),
                },
                PackEntry {
                    etag: "b".to_owned(),
                    skipped: None,
                },
            ],
        });
        assert!(index.contains("a") && index.contains("x") && !index.contains("c"));
        assert!(matches!(
            index.slots.get("b"),
            Some(Slot::Row { row: 1, .. })
        ));
        assert!(matches!(index.slots.get("x"), Some(Slot::Skipped(_))));
        assert_eq!(index.rows.get("p"), Some(&2));
        // Another pack that skipped "a" (deleted while it read) does not hide a's features.
        index.add(&FeaturePackIndex {
            pack: "q".to_owned(),
            entries: vec![PackEntry {
                etag: "a".to_owned(),
                skipped: Some(SkippedImage {
                    key: "d/cat/a.jpg".to_owned(),
                    label: "cat".to_owned(),
                    kind: "fetch".to_owned(),
                    reason: "deleted before it could be read".to_owned(),
                }),
            }],
        });
        assert!(matches!(
            index.slots.get("a"),
            Some(Slot::Row { row: 0, .. })
        ));
    }
}
