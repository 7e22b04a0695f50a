//! The streaming feed of a training job: dataset images flow from S3 into the extraction
//! workers and their features flow back into the feature cache, all at once, so reads and
//! writes overlap with compute and memory stays bounded by the channels, not the dataset.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use vision::{Backbone, ExtractOptions, Extracted, LabeledImage, SourceFailure, SourceItem};

use super::feature_cache::FeatureCache;
use super::{DatasetEntry, Trainer, TrainingProgress};
use crate::documents::FeaturePackIndex;
use crate::error::{PipelineError, Result};

/// What an extraction saved: how many of the images it was given, and the packs it wrote.
#[derive(Default)]
pub(super) struct Saved {
    pub(super) images: usize,
    pub(super) packs: Vec<FeaturePackIndex>,
}

impl Trainer {
    /// Streams the missing images from S3 into the extraction workers and saves every
    /// `pack_size` results to the feature cache as one pack while the workers go on, so reads
    /// and writes overlap with compute and the workers never wait at a pack boundary. Stops
    /// fetching when the deadline nears (checked every `chunk_size` images, after the first
    /// chunk). Returns what was extracted and saved; whatever was extracted is saved even when a
    /// fetch fails or time runs out.
    pub(super) async fn extract_missing(
        &self,
        backbone: &Arc<Backbone>,
        cache: &FeatureCache<'_>,
        missing: &[&DatasetEntry],
        (done_before, total): (usize, usize),
        pack_size: usize,
        deadline: Instant,
    ) -> Result<Saved> {
        if missing.is_empty() {
            return Ok(Saved::default());
        }
        let chunk_size = self.options.chunk_size.max(1);
        let pack_size = pack_size.max(1);
        let (item_sender, mut item_receiver) =
            tokio::sync::mpsc::channel::<SourceItem>(2 * self.options.fetch_concurrency.max(1));
        let (result_sender, mut result_receiver) =
            tokio::sync::mpsc::channel::<(usize, Extracted)>(chunk_size.min(pack_size));
        let options = ExtractOptions {
            workers: self.options.workers,
            total: Some(missing.len()),
            ..ExtractOptions::default()
        };
        let worker_backbone = Arc::clone(backbone);
        let extraction = tokio::task::spawn_blocking(move || {
            let source = std::iter::from_fn(move || item_receiver.blocking_recv());
            vision::extract_each(&worker_backbone, source, &options, |sequence, extracted| {
                match result_sender.blocking_send((sequence, extracted)) {
                    Ok(()) => ControlFlow::Continue(()),
                    // The saver stopped (a cache write failed): stop extracting.
                    Err(_) => ControlFlow::Break(()),
                }
            })
        });
        let feed = self.feed(missing, item_sender, chunk_size, deadline);
        let save = async {
            let mut saved = Saved::default();
            let mut batch = Vec::with_capacity(pack_size);
            while let Some((sequence, extracted)) = result_receiver.recv().await {
                // The feed sends `missing` in order, so the sequence indexes it.
                let Some(entry) = missing.get(sequence) else {
                    continue;
                };
                batch.push((*entry, extracted));
                self.report(TrainingProgress::ImageExtracted {
                    done: done_before + saved.images + batch.len(),
                    total,
                });
                if batch.len() == pack_size {
                    saved.packs.push(cache.write_pack(&batch).await?);
                    saved.images += batch.len();
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                saved.packs.push(cache.write_pack(&batch).await?);
                saved.images += batch.len();
            }
            Ok::<Saved, PipelineError>(saved)
        };
        let (fed, saved) = tokio::join!(feed, save);
        let extracted = extraction.await?;
        fed?;
        extracted?;
        saved
    }

    /// Fetches `missing` in order (bounded concurrency) into the extraction's channel. Returns
    /// how many images it handed over, or the first transient S3 error.
    async fn feed(
        &self,
        missing: &[&DatasetEntry],
        items: tokio::sync::mpsc::Sender<SourceItem>,
        chunk_size: usize,
        deadline: Instant,
    ) -> Result<usize> {
        let keys = missing.iter().map(|e| e.key.clone()).collect();
        let mut fetches = Box::pin(self.store.get_many(
            &self.config.input_bucket,
            keys,
            self.options.fetch_concurrency,
        ));
        let mut fed = 0;
        while let Some((key, fetched)) = fetches.next().await {
            // Always make progress: the deadline is checked only after the first chunk.
            if fed >= chunk_size
                && fed % chunk_size == 0
                && Instant::now() + self.options.safety_margin >= deadline
            {
                break;
            }
            let label = missing
                .get(fed)
                .map(|entry| entry.label.clone())
                .unwrap_or_default();
            let item = match fetched {
                Ok(object) => Ok(LabeledImage {
                    key,
                    label,
                    bytes: object.bytes,
                }),
                // Deleted since the listing: nothing to retry, so skip it for good.
                Err(PipelineError::NotFound { .. }) => Err(SourceFailure {
                    key,
                    label,
                    reason: "deleted before it could be read".to_owned(),
                }),
                Err(error) => return Err(error),
            };
            if items.send(item).await.is_err() {
                break;
            }
            fed += 1;
        }
        Ok(fed)
    }
}
