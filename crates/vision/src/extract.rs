//! Feature extraction over a labelled dataset, on all cores, with memory bounded by the number
//! of workers rather than the dataset size. Sources (local folders, S3) only produce bytes;
//! everything after the bytes arrive is shared.

use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, FEATURE_LEN};
use crate::decode::{DecodeLimits, decode};
use crate::error::{Result, VisionError};

/// One training image as a source delivers it.
#[derive(Debug, Clone)]
pub struct LabeledImage {
    /// Where it came from (a relative path or an S3 key), reported with any error.
    pub key: String,
    pub label: String,
    pub bytes: Vec<u8>,
}

/// What a source yields: the image, or why it could not be fetched (reported, then skipped).
pub type SourceItem = std::result::Result<LabeledImage, SourceFailure>;

#[derive(Debug, Clone)]
pub struct SourceFailure {
    pub key: String,
    pub label: String,
    pub reason: String,
}

/// An image left out of training, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedImage {
    pub key: String,
    pub label: String,
    /// Stable error kind, e.g. `truncated` or `unsupported_format` (`fetch` for source errors).
    pub kind: String,
    pub reason: String,
}

/// Features of every usable image, in source order.
#[derive(Debug, Clone, Default)]
pub struct FeatureSet {
    pub keys: Vec<String>,
    pub labels: Vec<String>,
    /// `keys.len() × FEATURE_LEN` values, row-major.
    pub features: Vec<f32>,
    pub skipped: Vec<SkippedImage>,
}

impl FeatureSet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn row(&self, index: usize) -> &[f32] {
        &self.features[index * FEATURE_LEN..(index + 1) * FEATURE_LEN]
    }

    /// Appends one image's features (e.g. from a cache) as if it had just been extracted.
    pub fn push(&mut self, key: String, label: String, features: &[f32]) {
        self.keys.push(key);
        self.labels.push(label);
        self.features.extend_from_slice(features);
    }
}

/// Progress of an extraction, reported after every image.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Images processed so far, usable or skipped.
    pub done: usize,
    /// Total images, when the source knows it.
    pub total: Option<usize>,
    pub images_per_second: f64,
    pub eta: Option<Duration>,
}

/// How an extraction runs.
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Worker threads, each running one image at a time (batch 1 is fastest for tract here).
    pub workers: usize,
    pub limits: DecodeLimits,
    /// Total item count for progress and ETA, if known.
    pub total: Option<usize>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            limits: DecodeLimits::default(),
            total: None,
        }
    }
}

/// One image's result, as soon as a worker has it.
#[derive(Debug, Clone)]
pub enum Extracted {
    Features {
        key: String,
        label: String,
        features: Vec<f32>,
    },
    Skipped(SkippedImage),
}

/// Decodes, preprocesses and runs every image from `source` through the backbone.
///
/// The source is drained on its own thread into a channel of `2 × workers` images, so at
/// most that many encoded images plus one decoded image per worker are in memory at once.
/// Bad images are skipped and listed; the caller decides whether enough remain.
pub fn extract_features<S>(
    backbone: &Backbone,
    source: S,
    options: &ExtractOptions,
    mut progress: impl FnMut(Progress),
) -> Result<FeatureSet>
where
    S: IntoIterator<Item = SourceItem>,
    S::IntoIter: Send,
{
    let started = Instant::now();
    let mut rows: Vec<(usize, String, String, Vec<f32>)> = Vec::new();
    let mut skipped: Vec<(usize, SkippedImage)> = Vec::new();
    extract_each(backbone, source, options, |sequence, extracted| {
        match extracted {
            Extracted::Features {
                key,
                label,
                features,
            } => rows.push((sequence, key, label, features)),
            Extracted::Skipped(image) => skipped.push((sequence, image)),
        }
        progress(progress_at(
            rows.len() + skipped.len(),
            options.total,
            started,
        ));
        ControlFlow::Continue(())
    })?;
    // Restore source order so training is reproducible.
    rows.sort_by_key(|row| row.0);
    skipped.sort_by_key(|entry| entry.0);
    let mut set = FeatureSet {
        skipped: skipped.into_iter().map(|(_, image)| image).collect(),
        ..FeatureSet::default()
    };
    set.features.reserve(rows.len() * FEATURE_LEN);
    for (_, key, label, features) in rows {
        set.push(key, label, &features);
    }
    Ok(set)
}

/// Like [`extract_features`], but hands each result (with its position in the source) to
/// `on_each` as it completes, so a caller can save results while the workers keep going.
/// `on_each` returning `Break` stops the extraction early.
pub fn extract_each<S>(
    backbone: &Backbone,
    source: S,
    options: &ExtractOptions,
    mut on_each: impl FnMut(usize, Extracted) -> ControlFlow<()>,
) -> Result<()>
where
    S: IntoIterator<Item = SourceItem>,
    S::IntoIter: Send,
{
    let workers = options.workers.max(1);
    let (work_tx, work_rx) = sync_channel::<(usize, SourceItem)>(2 * workers);
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = sync_channel::<(usize, Outcome)>(2 * workers);
    let source = source.into_iter();

    std::thread::scope(|scope| {
        scope.spawn(move || {
            for (sequence, item) in source.enumerate() {
                if work_tx.send((sequence, item)).is_err() {
                    break;
                }
            }
        });
        for _ in 0..workers {
            let work_rx = Arc::clone(&work_rx);
            let done_tx = done_tx.clone();
            let limits = &options.limits;
            scope.spawn(move || {
                while let Some((sequence, item)) = next_item(&work_rx) {
                    let outcome = process(backbone, limits, item);
                    if done_tx.send((sequence, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        // Returning drops the receiver, which stops the workers at their next send; the source
        // thread stops once they stop taking work.
        for (sequence, outcome) in done_rx {
            let extracted = match outcome {
                Outcome::Extracted(extracted) => extracted,
                Outcome::Failed(error) => return Err(error),
            };
            if on_each(sequence, extracted).is_break() {
                return Ok(());
            }
        }
        Ok(())
    })
}

fn next_item(work: &Mutex<Receiver<(usize, SourceItem)>>) -> Option<(usize, SourceItem)> {
    // A poisoned lock means another worker panicked; stop taking work.
    work.lock().ok()?.recv().ok()
}

enum Outcome {
    Extracted(Extracted),
    Failed(VisionError),
}

fn process(backbone: &Backbone, limits: &DecodeLimits, item: SourceItem) -> Outcome {
    let image = match item {
        Ok(image) => image,
        Err(failure) => {
            return Outcome::Extracted(Extracted::Skipped(SkippedImage {
                key: failure.key,
                label: failure.label,
                kind: "fetch".to_owned(),
                reason: failure.reason,
            }));
        }
    };
    let preprocessor = backbone.preprocessor();
    let result = decode(&image.bytes, limits, preprocessor.resize_short_side())
        .and_then(|decoded| preprocessor.tensor(&decoded.pixels))
        .and_then(|tensor| backbone.infer(tensor));
    match result {
        Ok(inference) => Outcome::Extracted(Extracted::Features {
            key: image.key,
            label: image.label,
            features: inference.features,
        }),
        Err(error) if error.is_bad_image() => {
            Outcome::Extracted(Extracted::Skipped(SkippedImage {
                key: image.key,
                label: image.label,
                kind: error.kind().to_owned(),
                reason: error.to_string(),
            }))
        }
        Err(error) => Outcome::Failed(error),
    }
}

fn progress_at(done: usize, total: Option<usize>, started: Instant) -> Progress {
    let elapsed = started.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 {
        done as f64 / elapsed
    } else {
        0.0
    };
    Progress {
        done,
        total,
        images_per_second: rate,
        eta: total
            .filter(|_| rate > 0.0)
            .map(|total| Duration::from_secs_f64(total.saturating_sub(done) as f64 / rate)),
    }
}
