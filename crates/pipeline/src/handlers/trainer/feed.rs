//! The streaming feed of a training job: dataset images flow from S3 into the extraction
//! workers and their features flow back into the feature cache, all at once, so reads and
//! writes overlap with compute and memory stays bounded by the channels, not the dataset.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use vision::{Backbone, ExtractOptions, Extracted, LabeledImage, SourceFailure, SourceItem};

use super::{DatasetEntry, Trainer, TrainingProgress, feature_cache};
use crate::error::{PipelineError, Result};

impl Trainer {
    /// Streams the missing images from S3 into the extraction workers and saves every
    /// `chunk_size` results to the feature cache while the workers go on, so reads and writes
    /// overlap with compute and the workers never wait at a chunk boundary. Stops fetching when
    /// the deadline nears (checked between chunks, after the first). Returns how many images
    /// were extracted and saved; whatever was extracted is saved even when a fetch fails.
    pub(super) async fn extract_missing(
        &self,
        backbone: &Arc<Backbone>,
        missing: &[&DatasetEntry],
        done_before: usize,
        total: usize,
        deadline: Instant,
    ) -> Result<usize> {
        if missing.is_empty() {
            return Ok(0);
        }
        let chunk_size = self.options.chunk_size.max(1);
        let (item_sender, mut item_receiver) =
            tokio::sync::mpsc::channel::<SourceItem>(2 * self.options.fetch_concurrency.max(1));
        let (result_sender, mut result_receiver) =
            tokio::sync::mpsc::channel::<(usize, Extracted)>(chunk_size);
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
        let feed = self.feed(missing, item_sender, deadline);
        let save = async {
            let mut saved = 0;
            let mut batch = Vec::with_capacity(chunk_size);
            while let Some((sequence, extracted)) = result_receiver.recv().await {
                // The feed sends `missing` in order, so the sequence indexes it.
                let Some(entry) = missing.get(sequence) else {
                    continue;
                };
                batch.push((*entry, extracted));
                self.report(TrainingProgress::ImageExtracted {
                    done: done_before + saved + batch.len(),
                    total,
                });
                if batch.len() == chunk_size {
                    self.save_features(&batch).await?;
                    saved += batch.len();
                    batch.clear();
                }
            }
            if !batch.is_empty() {
                self.save_features(&batch).await?;
                saved += batch.len();
            }
            Ok::<usize, PipelineError>(saved)
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
        deadline: Instant,
    ) -> Result<usize> {
        let chunk_size = self.options.chunk_size.max(1);
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

    async fn save_features(&self, batch: &[(&DatasetEntry, Extracted)]) -> Result<()> {
        feature_cache::write(
            &self.store,
            &self.config.results_bucket,
            batch,
            self.options.fetch_concurrency,
        )
        .await
    }
}
