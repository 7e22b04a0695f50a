//! Reclassification jobs (`{"classify": {"prefix": "images/2025/"}}`), which run on the
//! training state machine like a big training job: `prepare` pins the serving model and
//! shards the images under the prefix; each Map child classifies its shard, writing every
//! image's prediction (and review entry) exactly as the upload trigger does, plus its rows of
//! the job's CSV; the last step gathers the rows into one CSV and the result's counts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Semaphore;
use tracing::info;
use vision::{Classifier, DecodeLimits};

use super::Trainer;
use super::steps::StepOutput;
use crate::clock::now_rfc3339;
use crate::documents::{
    Checkpoint, ClassificationSummary, ClassifyShard, ClassifySpec, CurrentModel, IMAGENET_MODEL,
    JobResult, JobStatus, LabelCount, ListedImage, PinnedModel, PredictionDocument, PredictionRow,
    ShardPredictions,
};
use crate::error::{PipelineError, Result};
use crate::event::unquote;
use crate::layout::{self, InputKey};
use crate::observe;
use crate::predictions::{
    PredictionWrite, Replacing, classify_image, load_classifier, prediction_document,
    record_metrics, store_prediction,
};

/// The `error` of a row whose image was replaced after the job was prepared: the new
/// version's own upload event classifies it.
const SUPERSEDED: &str = "superseded";
/// The `error` of a row whose prediction another writer replaced while this one wrote it.
const REPLACED_CONCURRENTLY: &str = "replaced_concurrently";

impl Trainer {
    /// Every image under the spec's prefix, sorted by key; fails the job when there is none
    /// or more than a job may have.
    pub(super) async fn list_prefix(&self, spec: &ClassifySpec) -> Result<Vec<ListedImage>> {
        let prefix = &spec.classify.prefix;
        let limit = self.options.max_dataset_images;
        let listed = self
            .store
            .list_at_most(&self.config.input_bucket, prefix, limit, |key| {
                matches!(InputKey::parse(key), Ok(InputKey::Image { .. }))
            })
            .await?;
        let invalid = |reason| PipelineError::InvalidSpec {
            field: Some("classify.prefix".to_owned()),
            reason,
        };
        if listed.len() > limit {
            return Err(invalid(format!(
                "more than {limit} images under {prefix}, at most {limit} per job: classify narrower prefixes"
            )));
        }
        let images: Vec<ListedImage> = listed
            .into_iter()
            .map(|object| ListedImage {
                etag: unquote(&object.etag).to_owned(),
                key: object.key,
                size: object.size,
            })
            .collect();
        if images.is_empty() {
            return Err(invalid(format!(
                "no images under s3://{}/{prefix}",
                self.config.input_bucket
            )));
        }
        Ok(images)
    }

    /// Pins the serving model for the whole job, loading it once so that a broken
    /// `models/current.json` fails the job here rather than in every shard.
    async fn pin_serving_model(&self) -> Result<PinnedModel> {
        let bucket = &self.config.results_bucket;
        let pinned = match self
            .store
            .get_json_if_exists::<CurrentModel>(bucket, layout::CURRENT_MODEL_KEY)
            .await?
        {
            Some(current) => PinnedModel {
                model_id: current.document.model_id,
                head_key: Some(current.document.head_key),
            },
            None => PinnedModel {
                model_id: IMAGENET_MODEL.to_owned(),
                head_key: None,
            },
        };
        self.classifier_for(&pinned).await?;
        Ok(pinned)
    }

    async fn classifier_for(&self, model: &PinnedModel) -> Result<Classifier> {
        let bucket = &self.config.results_bucket;
        let backbone = Arc::clone(&self.backbone);
        load_classifier(&self.store, bucket, model.head_key.as_deref(), backbone).await
    }

    /// Writes the shards of a reclassification; returns (images, shards).
    pub(super) async fn prepare_classification(
        &self,
        job_id: &str,
        spec: &ClassifySpec,
    ) -> Result<(usize, usize)> {
        let model = self.pin_serving_model().await?;
        let images = self.list_prefix(spec).await?;
        let shards: Vec<ClassifyShard> = images
            .chunks(self.config.map_shard_images.max(1))
            .map(|chunk| ClassifyShard {
                job_id: job_id.to_owned(),
                model: model.clone(),
                images: chunk.to_vec(),
            })
            .collect();
        let count = self.write_shards(job_id, &shards).await?;
        info!(job_id, model_id = %model.model_id, images = images.len(), shards = count, "reclassification prepared");
        Ok((images.len(), count))
    }

    /// Classifies one shard's images with the pinned model, writes their predictions, then
    /// the shard's rows. Time running short fails the shard (transient: the state machine
    /// retries it; the retry classifies every image again, and its writes keep the
    /// predictions already made).
    pub(super) async fn classify_shard(
        &self,
        job_id: &str,
        shard_key: &str,
        deadline: Instant,
    ) -> Result<StepOutput> {
        let shard = self
            .store
            .get_json::<ClassifyShard>(&self.config.results_bucket, shard_key)
            .await?
            .document;
        let classifier = self.classifier_for(&shard.model).await?;
        let model_id = shard.model.model_id.as_str();
        let permits = Semaphore::new(self.options.workers.max(1));
        let stop_at = deadline
            .checked_sub(self.options.safety_margin)
            .unwrap_or(deadline);
        let rows: Vec<Result<Option<PredictionRow>>> = futures::stream::iter(&shard.images)
            .map(|image| {
                let (classifier, permits) = (&classifier, &permits);
                async move {
                    if Instant::now() >= stop_at {
                        return Ok(None);
                    }
                    self.classify_listed(classifier, permits, model_id, image)
                        .await
                        .map(Some)
                }
            })
            .buffered(self.options.fetch_concurrency.max(1))
            .collect()
            .await;
        let rows: Vec<Option<PredictionRow>> = rows.into_iter().collect::<Result<_>>()?;
        let rows: Vec<PredictionRow> = rows.into_iter().flatten().collect();
        let total = shard.images.len();
        if rows.len() < total {
            return Err(PipelineError::WorkerFailed(format!(
                "shard {shard_key}: time ran out after {} of {total} images",
                rows.len()
            )));
        }
        let part = layout::shard_predictions_key(job_id, shard_key);
        let classified = rows.len();
        self.store
            .put_json(
                &self.config.results_bucket,
                &part,
                &ShardPredictions { rows },
            )
            .await?;
        Ok(StepOutput::Extracted {
            shard: shard_key.to_owned(),
            images: total,
            extracted: classified,
        })
    }

    /// One image of a shard: fetched as the version listed, classified, its prediction
    /// written; its row says what became of it.
    async fn classify_listed(
        &self,
        classifier: &Classifier,
        permits: &Semaphore,
        model_id: &str,
        image: &ListedImage,
    ) -> Result<PredictionRow> {
        let error_row = |kind: &str| PredictionRow {
            key: image.key.clone(),
            etag: image.etag.clone(),
            model_id: None,
            label: None,
            score: None,
            confident: None,
            error: Some(kind.to_owned()),
        };
        let Ok(InputKey::Image { path }) = InputKey::parse(&image.key) else {
            return Err(PipelineError::UnsafeName {
                what: "image key",
                value: image.key.clone(),
            });
        };
        let limits = DecodeLimits::default();
        let classified = match limits.check_encoded_len(image.size) {
            Err(error) => Err(error.into()),
            Ok(()) => {
                let bucket = &self.config.input_bucket;
                match self
                    .store
                    .get_if_match(bucket, &image.key, &image.etag)
                    .await
                {
                    Ok(Some(object)) => {
                        let _permit = permits.acquire().await.map_err(|e| {
                            PipelineError::WorkerFailed(format!("classification stopped: {e}"))
                        })?;
                        classify_image(classifier.clone(), object.bytes, limits).await
                    }
                    Ok(None) => return Ok(error_row(SUPERSEDED)),
                    Err(error @ PipelineError::NotFound { .. }) => {
                        return Ok(error_row(error.kind()));
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let document = prediction_document(
            image.key.clone(),
            Some(image.etag.clone()),
            model_id.to_owned(),
            classified,
        );
        let bucket = &self.config.results_bucket;
        let written = store_prediction(
            &self.store,
            bucket,
            &path,
            &document,
            Replacing::OtherModels,
        );
        Ok(match written.await? {
            PredictionWrite::Written => {
                record_metrics(&document);
                if document.confident != Some(false) {
                    // The old model's doubt about this image no longer stands (a doubtful
                    // prediction was queued again by the write). DELETE is free.
                    let review = layout::review_key(&path);
                    self.store.delete(bucket, &review).await?;
                }
                row_of(image, &document)
            }
            PredictionWrite::Kept(Some(kept)) if kept.source_etag == document.source_etag => {
                row_of(image, &kept)
            }
            PredictionWrite::Kept(Some(_)) => error_row(SUPERSEDED),
            PredictionWrite::Kept(None) => error_row(REPLACED_CONCURRENTLY),
        })
    }

    /// Gathers the shards' rows into `results/<id>/predictions.csv` and writes the job's
    /// result (once) with the counts per label.
    pub(super) async fn summarise_classification(
        &self,
        job_id: &str,
        spec: &ClassifySpec,
        since_prepared: Duration,
    ) -> Result<JobResult> {
        let started = Instant::now();
        let bucket = &self.config.results_bucket;
        let parts = self
            .store
            .list(bucket, &layout::shard_predictions_prefix(job_id))
            .await?;
        let mut documents = futures::stream::iter(parts)
            .map(|part| async move {
                self.store
                    .get_json::<ShardPredictions>(bucket, &part.key)
                    .await
            })
            .buffered(self.options.fetch_concurrency.max(1));
        let mut tally = Tally::default();
        let mut csv = csv::Writer::from_writer(Vec::new());
        while let Some(part) = documents.next().await {
            for row in part?.document.rows {
                tally.add(&row);
                csv.serialize(&row).map_err(csv_error)?;
            }
        }
        let csv = csv.into_inner().map_err(|e| csv_error(e.into_error()))?;
        // What `prepare` listed, read strictly: the check must not be skipped.
        let listed = self
            .store
            .get_json::<Checkpoint>(bucket, &layout::checkpoint_key(job_id))
            .await?
            .document
            .images_total;
        if tally.rows < listed {
            return Err(PipelineError::PredictionsMissing {
                missing: listed - tally.rows,
                total: listed,
            });
        }
        let csv_key = layout::predictions_csv_key(job_id);
        self.store.put(bucket, &csv_key, csv, "text/csv").await?;
        // Every shard pins the same model; the first one says which.
        let model_id = self
            .store
            .get_json::<ClassifyShard>(bucket, &layout::shard_key(job_id, 0))
            .await?
            .document
            .model
            .model_id;
        let duration = since_prepared + started.elapsed();
        let summary = tally.summary(model_id, csv_key, duration);
        let result = JobResult {
            job_id: job_id.to_owned(),
            status: JobStatus::Succeeded,
            dataset: None,
            prefix: Some(spec.classify.prefix.clone()),
            notify: spec.notify.clone(),
            error: None,
            model: None,
            summary: None,
            classification: Some(summary),
            promotion: None,
            continuations: 0,
            finished_at: now_rfc3339(),
        };
        if self.write_result(job_id, &result).await? {
            metrics::histogram!(observe::JOB_DURATION_SECONDS).record(duration.as_secs_f64());
            let _ = self
                .store
                .delete(bucket, &layout::checkpoint_key(job_id))
                .await;
        }
        Ok(result)
    }
}

/// The CSV row of an image's stored prediction.
fn row_of(image: &ListedImage, prediction: &PredictionDocument) -> PredictionRow {
    let top = prediction.top.first();
    PredictionRow {
        key: image.key.clone(),
        etag: image.etag.clone(),
        model_id: Some(prediction.model_id.clone()),
        label: top.map(|t| t.label.clone()),
        score: top.map(|t| t.score),
        confident: prediction.confident,
        error: prediction.error.as_ref().map(|e| e.kind.clone()),
    }
}

fn csv_error(error: impl std::fmt::Display) -> PipelineError {
    PipelineError::Encode {
        what: "predictions CSV",
        reason: error.to_string(),
    }
}

/// The counts of a reclassification, added up row by row.
#[derive(Default)]
struct Tally {
    rows: usize,
    low_confidence: usize,
    labels: HashMap<String, usize>,
    errors: HashMap<String, usize>,
}

impl Tally {
    fn add(&mut self, row: &PredictionRow) {
        self.rows += 1;
        match (&row.label, &row.error) {
            (Some(label), None) => *self.labels.entry(label.clone()).or_default() += 1,
            (_, error) => {
                let kind = error.clone().unwrap_or_else(|| "no_label".to_owned());
                *self.errors.entry(kind).or_default() += 1;
            }
        }
        if row.confident == Some(false) {
            self.low_confidence += 1;
        }
    }

    fn summary(
        self,
        model_id: String,
        predictions_csv: String,
        duration: Duration,
    ) -> ClassificationSummary {
        ClassificationSummary {
            model_id,
            images: self.rows,
            predicted: self.labels.values().sum(),
            low_confidence: self.low_confidence,
            labels: most_first(self.labels),
            errors: most_first(self.errors),
            predictions_csv,
            duration_ms: duration.as_secs_f64() * 1000.0,
        }
    }
}

/// Counts sorted by images, most first, then by label.
fn most_first(counts: HashMap<String, usize>) -> Vec<LabelCount> {
    let mut counts: Vec<LabelCount> = counts
        .into_iter()
        .map(|(label, images)| LabelCount { label, images })
        .collect();
    counts.sort_by(|a, b| b.images.cmp(&a.images).then_with(|| a.label.cmp(&b.label)));
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: Option<&str>, confident: Option<bool>, error: Option<&str>) -> PredictionRow {
        PredictionRow {
            key: "images/a, \"b\".jpg".into(),
            etag: "e".into(),
            model_id: label.map(|_| "m".to_owned()),
            label: label.map(str::to_owned),
            score: label.map(|_| 0.5),
            confident,
            error: error.map(str::to_owned),
        }
    }

    #[test]
    fn the_tally_counts_labels_errors_and_doubts() {
        let mut tally = Tally::default();
        for r in [
            row(Some("cat"), Some(true), None),
            row(Some("dog"), Some(false), None),
            row(Some("dog"), Some(true), None),
            row(None, None, Some("corrupt_image")),
            row(None, None, Some(SUPERSEDED)),
        ] {
            tally.add(&r);
        }
        let summary = tally.summary("m".into(), "k".into(), Duration::ZERO);
        assert_eq!((summary.images, summary.predicted), (5, 3));
        assert_eq!(summary.low_confidence, 1);
        assert_eq!(summary.labels[0].label, "dog");
        assert_eq!(summary.labels[0].images, 2);
        assert_eq!(summary.errors.len(), 2);
    }

    /// Keys with commas and quotes survive the CSV: it is read back field for field.
    #[test]
    fn csv_rows_round_trip() {
        let rows = [
            row(Some("a,b"), Some(true), None),
            row(None, None, Some("x")),
        ];
        let mut writer = csv::Writer::from_writer(Vec::new());
        rows.iter().for_each(|r| writer.serialize(r).unwrap());
        let bytes = writer.into_inner().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("key,etag,model_id,label,score,confident,error\n"),
            "{text}"
        );
        let read: Vec<PredictionRow> = csv::Reader::from_reader(bytes.as_slice())
            .deserialize()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert_eq!(read, rows);
    }
}
