//! Writing predictions: one per image version, whoever writes it (the upload trigger, or the
//! failure recorder after the upload trigger gave up).

use crate::documents::PredictionDocument;
use crate::error::Result;
use crate::store::S3Store;

/// What [`write_prediction`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum PredictionWrite {
    Written,
    /// This image version already had a prediction, which stays: here it is (`None` if it
    /// could not be parsed).
    Kept(Option<Box<PredictionDocument>>),
}

/// Writes `document` at `key` unless this image version already has a prediction. The common
/// case, a new image, is one PUT (`If-None-Match: *`). When a prediction exists it is read:
/// this version's (a duplicate event, or a concurrent one that won) is kept; an older
/// version's is replaced with `If-Match`, so of two concurrent writers one wins.
pub async fn write_prediction(
    store: &S3Store,
    bucket: &str,
    key: &str,
    document: &PredictionDocument,
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
    let same_version = existing.document.as_ref().is_some_and(|previous| {
        previous.source_etag.is_some() && previous.source_etag == document.source_etag
    });
    match existing.etag {
        Some(etag) if !same_version => {
            // Refused: a concurrent writer replaced the older version's first.
            let done = store
                .put_json_if_match(bucket, key, document, &etag)
                .await?;
            Ok(written(done, None))
        }
        _ => Ok(PredictionWrite::Kept(existing.document.map(Box::new))),
    }
}
