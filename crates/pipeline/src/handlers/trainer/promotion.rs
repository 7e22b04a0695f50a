//! Champion vs challenger: a finished job's model (the challenger) against the serving model
//! (the champion), both scored on the job's held-out images — the champion's head on the
//! features already extracted, so comparing costs no inference — then promoted per the spec's
//! `promote` through the registry's conditional write.

use std::collections::HashSet;

use vision::{HeadDocument, TrainedBundle, evaluate, score_head};

use super::Trained;

use crate::documents::{
    CurrentModel, IMAGENET_MODEL, ModelChange, ModelScore, PromotePolicy, Promotion,
    TRAINED_ON_FILE, TrainedOn,
};
use crate::error::{PipelineError, Result};
use crate::layout;
use crate::registry::{ChangeRequest, Registry};
use crate::store::{S3Store, Stored};

/// How many times the decision is made again when another change got in first.
const ATTEMPTS: usize = 5;

/// The serving model as the challenger meets it.
#[derive(Debug, Clone, PartialEq)]
pub enum Champion {
    /// Nothing trained serves (ImageNet classes).
    None,
    /// Both scored on the same held-out images of the job, none of which the champion was
    /// trained on: `images` of them.
    Scored {
        champion: ModelScore,
        challenger: ModelScore,
        images: usize,
    },
    /// Serving, but the two cannot be compared, and why.
    NotComparable { model_id: String, why: String },
}

/// The decision for `policy`: promoted or not, and why, in one sentence.
pub fn decide(policy: PromotePolicy, champion: &Champion) -> (bool, String) {
    use PromotePolicy::*;
    match (policy, champion) {
        (Never, _) => (
            false,
            "not promoted: the spec says `promote: never` (promote it with `lambda-vision models promote`)".to_owned(),
        ),
        (Always, Champion::None) | (IfBetter, Champion::None) => {
            (true, "promoted: no trained model was serving".to_owned())
        }
        (Always, _) => (true, "promoted: the spec says `promote: always`".to_owned()),
        (IfBetter, Champion::NotComparable { model_id, why }) => (
            false,
            format!("not promoted: it cannot be compared with the serving model {model_id} ({why}); use `promote: always` to replace it anyway"),
        ),
        (IfBetter, Champion::Scored { champion, challenger, images }) => {
            let comparison = format!(
                "macro-F1 {:.3} against the serving model {}'s {:.3} on the same {images} held-out images, none of which it was trained on",
                challenger.macro_f1, champion.model_id, champion.macro_f1
            );
            if challenger.macro_f1 >= champion.macro_f1 {
                (true, format!("promoted: {comparison}"))
            } else {
                (false, format!("not promoted: {comparison}"))
            }
        }
    }
}

/// Decides and, when the decision is to promote, moves `models/current.json` to `job_id`.
pub(super) async fn promote(
    store: &S3Store,
    bucket: &str,
    job_id: &str,
    policy: PromotePolicy,
    trained: &Trained,
) -> Result<Promotion> {
    let registry = Registry::new(store, bucket);
    let whole = challenger_score(job_id, &trained.bundle);
    for _ in 0..ATTEMPTS {
        let current = registry.serving().await?;
        if let Some(current) = &current
            && current.document.model_id == job_id
        {
            // A retry of an invocation that promoted before it could write the result.
            return Ok(Promotion {
                policy,
                promoted: true,
                reason: "promoted (already serving: a retried invocation)".to_owned(),
                challenger: whole,
                champion: None,
                compared_on: trained.bundle.evaluated_rows.len(),
                serving: job_id.to_owned(),
            });
        }
        let champion = match &current {
            None => Champion::None,
            Some(current) => {
                score_champion(store, bucket, job_id, &current.document, trained).await?
            }
        };
        let (promoted, reason) = decide(policy, &champion);
        let serving = if promoted {
            let request = ChangeRequest {
                model_id: job_id,
                action: ModelChange::Trained,
                changed_by: job_id,
                reason: reason.clone(),
            };
            match registry.change(current.as_ref(), &request).await? {
                Some(_) => job_id.to_owned(),
                None => continue,
            }
        } else {
            serving_id(current.as_ref())
        };
        let (challenger, champion, compared_on) = match champion {
            Champion::Scored {
                champion,
                challenger,
                images,
            } => (challenger, Some(champion), images),
            _ => (whole, None, trained.bundle.evaluated_rows.len()),
        };
        return Ok(Promotion {
            policy,
            promoted,
            reason,
            challenger,
            champion,
            compared_on,
            serving,
        });
    }
    Err(PipelineError::ModelChangeRefused(format!(
        "models/current.json changed {ATTEMPTS} times while job {job_id} was deciding whether to promote its model"
    )))
}

/// The decision when none could be made (the pointer cannot be read or keeps changing): not
/// promoted, and why. The model is kept; `lambda-vision models promote` can serve it later.
pub(super) fn not_decided(
    job_id: &str,
    policy: PromotePolicy,
    bundle: &TrainedBundle,
    error: &PipelineError,
) -> Promotion {
    Promotion {
        policy,
        promoted: false,
        reason: format!("not promoted: {error}"),
        challenger: challenger_score(job_id, bundle),
        champion: None,
        compared_on: 0,
        serving: "unknown".to_owned(),
    }
}

/// The job's model on all of its held-out images.
fn challenger_score(job_id: &str, bundle: &TrainedBundle) -> ModelScore {
    let evaluation = &bundle.metrics.evaluation;
    ModelScore {
        model_id: job_id.to_owned(),
        accuracy: evaluation.accuracy,
        macro_f1: evaluation.macro_f1,
    }
}

fn serving_id(current: Option<&Stored<CurrentModel>>) -> String {
    current.map_or_else(
        || IMAGENET_MODEL.to_owned(),
        |c| c.document.model_id.clone(),
    )
}

/// The serving model's head and the job's model on the job's held-out images the serving
/// model was not trained on, or why the two cannot be compared.
async fn score_champion(
    store: &S3Store,
    bucket: &str,
    job_id: &str,
    current: &CurrentModel,
    trained: &Trained,
) -> Result<Champion> {
    let bundle = &trained.bundle;
    let not_comparable = |why: String| {
        Ok(Champion::NotComparable {
            model_id: current.model_id.clone(),
            why,
        })
    };
    if bundle.metrics.evaluated_on != "validation" {
        return not_comparable("this job held no images out (`validation_split` 0)".to_owned());
    }
    let document = match store
        .get_json::<HeadDocument>(bucket, &current.head_key)
        .await
    {
        Ok(stored) => stored.document,
        Err(error) if error.is_transient() => return Err(error),
        Err(error) => return not_comparable(format!("its head cannot be read: {error}")),
    };
    let head = match document.head_for(&trained.backbone) {
        Ok(head) => head,
        Err(error) => return not_comparable(format!("another backbone or input size: {error}")),
    };
    let mut theirs = head.labels.clone();
    let mut ours = bundle.head.labels.clone();
    theirs.sort();
    ours.sort();
    if theirs != ours {
        return not_comparable(format!(
            "different labels: it has {}, this job {}",
            theirs.join(", "),
            ours.join(", ")
        ));
    }
    // Only images the champion never saw: scored on its own training images it would win.
    let seen: HashSet<String> = store
        .get_json_lenient::<TrainedOn>(
            bucket,
            &layout::model_file_key(&current.model_id, TRAINED_ON_FILE),
        )
        .await?
        .and_then(|stored| stored.document)
        .map(|trained_on| trained_on.etags.into_iter().collect())
        .unwrap_or_default();
    let unseen: Vec<usize> = (0..bundle.evaluated_rows.len())
        .filter(|&i| {
            let key = &trained.set.keys[bundle.evaluated_rows[i]];
            trained
                .versions
                .get(key)
                .is_none_or(|(etag, _)| !seen.contains(etag))
        })
        .collect();
    if unseen.is_empty() {
        return not_comparable(format!(
            "it was trained on all {} of this job's held-out images",
            bundle.evaluated_rows.len()
        ));
    }
    let rows: Vec<usize> = unseen.iter().map(|&i| bundle.evaluated_rows[i]).collect();
    let Some(theirs) = score_head(&head, &trained.set, &rows) else {
        return not_comparable("different labels".to_owned());
    };
    let labels = &bundle.head.labels;
    let index = |label: &str| labels.iter().position(|l| l == label).unwrap_or_default();
    let (truth, predicted): (Vec<usize>, Vec<usize>) = unseen
        .iter()
        .map(|&i| {
            let image = &bundle.evaluated[i];
            (index(&image.truth), index(&image.predicted))
        })
        .unzip();
    let ours = evaluate(&truth, &predicted, labels);
    Ok(Champion::Scored {
        champion: ModelScore {
            model_id: current.model_id.clone(),
            accuracy: theirs.accuracy,
            macro_f1: theirs.macro_f1,
        },
        challenger: ModelScore {
            model_id: job_id.to_owned(),
            accuracy: ours.accuracy,
            macro_f1: ours.macro_f1,
        },
        images: rows.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(model_id: &str, macro_f1: f64) -> ModelScore {
        ModelScore {
            model_id: model_id.to_owned(),
            accuracy: macro_f1,
            macro_f1,
        }
    }

    fn scored(challenger: f64, champion: f64) -> Champion {
        Champion::Scored {
            champion: score("old", champion),
            challenger: score("new", challenger),
            images: 20,
        }
    }

    #[test]
    fn if_better_promotes_ties_and_wins_only() {
        let policy = PromotePolicy::IfBetter;
        assert!(decide(policy, &scored(0.8, 0.8)).0);
        assert!(decide(policy, &scored(0.8, 0.7)).0);
        let (promoted, reason) = decide(policy, &scored(0.8, 0.9));
        assert!(!promoted);
        assert!(reason.contains("0.800") && reason.contains("0.900") && reason.contains("old"));
        assert!(reason.contains("20 held-out images"), "{reason}");
        assert!(decide(policy, &Champion::None).0);
    }

    #[test]
    fn not_comparable_needs_always() {
        let champion = Champion::NotComparable {
            model_id: "old".to_owned(),
            why: "different labels".to_owned(),
        };
        let (promoted, reason) = decide(PromotePolicy::IfBetter, &champion);
        assert!(!promoted && reason.contains("different labels"), "{reason}");
        assert!(decide(PromotePolicy::Always, &champion).0);
        assert!(!decide(PromotePolicy::Never, &Champion::None).0);
        assert!(decide(PromotePolicy::Always, &scored(0.1, 1.0)).0);
    }
}
