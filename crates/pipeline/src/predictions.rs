//! Making and writing predictions, one per image version and model, whoever makes them: the
//! upload trigger (one new image), a reclassification job's shards (every image under a
//! prefix, with the model pinned when the job was prepared), or the failure recorder (an
//! error prediction after the upload trigger gave up).

use std::sync::Arc;

use tracing::warn;
use vision::{Backbone, Classification, Classifier, DecodeLimits, HeadDocument};

use crate::clock::now_rfc3339;
use crate::documents::{ErrorInfo, PredictionDocument, ReviewEntry};
use crate::error::{PipelineError, Result};
use crate::layout;
use crate::loading::backbone_at;
use crate::observe;
use crate::store::S3Store;

/// How many classes a prediction lists.
pub const TOP_K: usize = 5;

/// The classifier of a model: the backbone's ImageNet classes when there is no trained head,
/// else the head at `head_key` on a backbone for the input size it was trained at.
pub async fn load_classifier(
    store: &S3Store,
    bucket: &str,
    head_key: Option<&str>,
    backbone: Arc<Backbone>,
) -> Result<Classifier> {
    let Some(head_key) = head_key else {
        return Ok(Classifier::imagenet(backbone));
    };
    let document = store
        .get_json::<HeadDocument>(bucket, head_key)
        .await?
        .document;
    let backbone = backbone_at(backbone, document.input_size).await?;
    Ok(Classifier::from_document(backbone, &document)?)
}

/// Classifies one image on a blocking thread: its classes and the top label's threshold.
pub async fn classify_image(
    classifier: Classifier,
    bytes: Vec<u8>,
    limits: DecodeLimits,
) -> Result<(Classification, Option<f32>)> {
    tokio::task::spawn_blocking(move || {
        classifier.classify(&bytes, &limits, TOP_K).map(|c| {
            let threshold = c
                .top
                .first()
                .and_then(|top| classifier.threshold(&top.label));
            (c, threshold)
        })
    })
    .await
    .map_err(PipelineError::from)
    .and_then(|result| result.map_err(PipelineError::from))
}

/// The prediction for the image at `source_key`: its classes, or why it has none (a bad
/// image, a model that could not be loaded, an image deleted before its GET).
pub fn prediction_document(
    source_key: String,
    source_etag: Option<String>,
    model_id: String,
    classified: Result<(Classification, Option<f32>)>,
) -> PredictionDocument {
    let mut document = PredictionDocument::empty(source_key, source_etag, model_id);
    match classified {
        Ok((classification, threshold)) => {
            document.threshold = threshold;
            document.confident = threshold
                .zip(classification.top.first())
                .map(|(threshold, top)| top.score >= threshold);
            document.top = classification.top;
            document.width = Some(classification.width);
            document.height = Some(classification.height);
            document.timings_ms = Some(classification.timings);
        }
        Err(error) => {
            if !matches!(&error, PipelineError::Vision(e) if e.is_bad_image()) {
                warn!(%error, "no prediction for a reason other than the image");
            }
            document.error = Some(ErrorInfo {
                kind: error.kind().to_owned(),
                message: error.to_string(),
            });
        }
    }
    document
}

/// What [`write_prediction`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictionWrite {
    Written,
    /// The stored prediction stands (see [`Replacing`]): here it is (`None` if it could not be
    /// parsed, or a concurrent writer replaced it first).
    Kept(Option<Box<PredictionDocument>>),
}

/// Which stored prediction a new one replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replacing {
    /// The upload trigger and the failure recorder, which see each image version once: an
    /// older version's prediction. One for this version stands, whatever made it (a duplicate
    /// event, a concurrent one that won, a reclassification since).
    OlderVersions,
    /// A reclassification, which classifies the version it listed: this version's prediction
    /// made by another model (unless it is real and the new one an error). Another version's
    /// stands: the image changed since the job listed it, and its own event classifies it.
    OtherModels,
}

/// Writes `document` at `key` unless the stored prediction stands against it (see
/// [`Replacing`]). The common case, a new image, is one PUT (`If-None-Match: *`). When a
/// prediction exists it is read, and replaced with `If-Match`, so of two concurrent writers
/// one wins.
pub async fn write_prediction(
    store: &S3Store,
    bucket: &str,
    key: &str,
    document: &PredictionDocument,
    replacing: Replacing,
) -> Result<PredictionWrite> {
    let written = |done: bool, kept: Option<Box<PredictionDocument>>| {
        if done {
            PredictionWrite::Written
        } else {
            PredictionWrite::Kept(kept)
        }
    };
    if store.put_json_if_absent(bucket, key, document).await? {
        return Ok(PredictionWrite::Written);
    }
    let Some(existing) = store
        .get_json_lenient::<PredictionDocument>(bucket, key)
        .await?
    else {
        // Deleted since the PUT: try once more.
        let done = store.put_json_if_absent(bucket, key, document).await?;
        return Ok(written(done, None));
    };
    let stands = existing
        .document
        .as_ref()
        .is_some_and(|previous| stands_against(previous, document, replacing));
    match existing.etag {
        Some(etag) if !stands => {
            // Refused: a concurrent writer replaced it first.
            let done = store
                .put_json_if_match(bucket, key, document, &etag)
                .await?;
            Ok(written(done, None))
        }
        _ => Ok(PredictionWrite::Kept(existing.document.map(Box::new))),
    }
}

/// Whether `previous` stays rather than being replaced by `next`.
fn stands_against(
    previous: &PredictionDocument,
    next: &PredictionDocument,
    replacing: Replacing,
) -> bool {
    let same_version = previous.source_etag.is_some() && previous.source_etag == next.source_etag;
    match replacing {
        Replacing::OlderVersions => same_version,
        Replacing::OtherModels => {
            !same_version
                || previous.model_id == next.model_id
                || (previous.error.is_none() && next.error.is_some())
        }
    }
}

/// Writes the prediction of the image at `images/<path>` and, when its top label is below its
/// threshold, its review entry. A prediction that stands is returned, and its review entry is
/// written again in case the first attempt stopped between the two writes.
pub async fn store_prediction(
    store: &S3Store,
    bucket: &str,
    path: &str,
    document: &PredictionDocument,
    replacing: Replacing,
) -> Result<PredictionWrite> {
    let key = layout::prediction_key(path);
    let write = write_prediction(store, bucket, &key, document, replacing).await?;
    let reviewed = match &write {
        PredictionWrite::Written => Some(document),
        PredictionWrite::Kept(existing) => existing.as_deref(),
    };
    if let Some(prediction) = reviewed {
        queue_for_review(store, bucket, prediction, &key, path).await?;
    }
    Ok(write)
}

/// Writes `review/<path>.json` for a prediction whose top label is below its threshold.
async fn queue_for_review(
    store: &S3Store,
    bucket: &str,
    prediction: &PredictionDocument,
    prediction_key: &str,
    path: &str,
) -> Result<()> {
    let (Some(false), Some(threshold)) = (prediction.confident, prediction.threshold) else {
        return Ok(());
    };
    let entry = ReviewEntry {
        source_key: prediction.source_key.clone(),
        source_etag: prediction.source_etag.clone(),
        model_id: prediction.model_id.clone(),
        top: prediction.top.clone(),
        threshold,
        prediction_key: prediction_key.to_owned(),
        created_at: now_rfc3339(),
    };
    store
        .put_json(bucket, &layout::review_key(path), &entry)
        .await
}

/// Counts a written prediction: its timings, or one more image without a prediction.
pub fn record_metrics(document: &PredictionDocument) {
    match &document.timings_ms {
        Some(timings) if document.error.is_none() => {
            metrics::counter!(observe::IMAGES_CLASSIFIED).increment(1);
            metrics::histogram!(observe::INFERENCE_MS).record(timings.inference_ms);
            metrics::histogram!(observe::CLASSIFY_MS)
                .record(timings.decode_ms + timings.preprocess_ms + timings.inference_ms);
        }
        _ => metrics::counter!(observe::IMAGE_ERRORS).increment(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prediction(etag: &str, model_id: &str, error: bool) -> PredictionDocument {
        let mut document =
            PredictionDocument::empty("images/a.jpg".into(), Some(etag.into()), model_id.into());
        if error {
            document.error = Some(ErrorInfo {
                kind: "corrupt_image".into(),
                message: "bad".into(),
            });
        }
        document
    }

    #[test]
    fn events_replace_older_versions_only() {
        let stands = |previous, next| stands_against(&previous, &next, Replacing::OlderVersions);
        let stored = prediction("e1", "m1", false);
        // A duplicate event, or one late from a container still serving the old model.
        assert!(stands(stored.clone(), prediction("e1", "m1", false)));
        assert!(stands(stored.clone(), prediction("e1", "m0", false)));
        // The failure recorder's error never replaces this version's prediction.
        assert!(stands(stored.clone(), prediction("e1", "none", true)));
        // A newer image version replaces it, whatever the model.
        assert!(!stands(stored, prediction("e2", "m1", false)));
    }

    #[test]
    fn a_reclassification_replaces_other_models_of_its_version_only() {
        let stands = |previous, next| stands_against(&previous, &next, Replacing::OtherModels);
        let stored = prediction("e1", "m1", false);
        assert!(!stands(stored.clone(), prediction("e1", "m2", false)));
        assert!(stands(stored.clone(), prediction("e1", "m1", false)));
        // Its error does not replace a real prediction; its real one replaces an error.
        assert!(stands(stored.clone(), prediction("e1", "m2", true)));
        assert!(!stands(
            prediction("e1", "none", true),
            prediction("e1", "m2", false)
        ));
        // Another version's stands: the image changed after the job listed it.
        assert!(stands(stored, prediction("e0", "m2", false)));
    }
}
