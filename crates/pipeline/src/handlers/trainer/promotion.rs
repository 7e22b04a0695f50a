//! Champion vs challenger: a finished job's model (the challenger) against the serving model
//! (the champion), both scored on the job's held-out images — the champion's head on the
//! features already extracted, so comparing costs no inference — then promoted per the spec's
//! `promote` through the registry's conditional write.

use vision::{Backbone, FeatureSet, HeadDocument, TrainedBundle, score_head};

use crate::documents::{
    CurrentModel, IMAGENET_MODEL, ModelChange, ModelScore, PromotePolicy, Promotion,
};
use crate::error::{PipelineError, Result};
use crate::registry::{ChangeRequest, Registry};
use crate::store::{S3Store, Stored};

/// How many times the decision is made again when another change got in first.
const ATTEMPTS: usize = 5;

/// The serving model as the challenger meets it.
#[derive(Debug, Clone, PartialEq)]
pub enum Champion {
    /// Nothing trained serves (ImageNet classes).
    None,
    /// Scored on the challenger's held-out images.
    Scored(ModelScore),
    /// Serving, but the two cannot be compared, and why.
    NotComparable { model_id: String, why: String },
}

/// The decision for `policy`: promoted or not, and why, in one sentence.
pub fn decide(
    policy: PromotePolicy,
    challenger: &ModelScore,
    champion: &Champion,
) -> (bool, String) {
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
        (IfBetter, Champion::Scored(champion)) => {
            let comparison = format!(
                "macro-F1 {:.3} against the serving model {}'s {:.3} on the same held-out images",
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
    trained: (&TrainedBundle, &FeatureSet, &Backbone),
) -> Result<Promotion> {
    let bundle = trained.0;
    let registry = Registry::new(store, bucket);
    let evaluation = &bundle.metrics.evaluation;
    let challenger = ModelScore {
        model_id: job_id.to_owned(),
        accuracy: evaluation.accuracy,
        macro_f1: evaluation.macro_f1,
    };
    let compared_on = bundle.evaluated_rows.len();
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
                challenger,
                champion: None,
                compared_on,
                serving: job_id.to_owned(),
            });
        }
        let champion = match &current {
            None => Champion::None,
            Some(current) => score_champion(store, bucket, &current.document, trained).await?,
        };
        let (promoted, reason) = decide(policy, &challenger, &champion);
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
        let champion = match champion {
            Champion::Scored(score) => Some(score),
            _ => None,
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

fn serving_id(current: Option<&Stored<CurrentModel>>) -> String {
    current.map_or_else(
        || IMAGENET_MODEL.to_owned(),
        |c| c.document.model_id.clone(),
    )
}

/// The serving model's head on the challenger's held-out images, or why it cannot be.
async fn score_champion(
    store: &S3Store,
    bucket: &str,
    current: &CurrentModel,
    (bundle, set, backbone): (&TrainedBundle, &FeatureSet, &Backbone),
) -> Result<Champion> {
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
    let head = match document.head_for(backbone) {
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
    match score_head(&head, set, &bundle.evaluated_rows) {
        Some(evaluation) => Ok(Champion::Scored(ModelScore {
            model_id: current.model_id.clone(),
            accuracy: evaluation.accuracy,
            macro_f1: evaluation.macro_f1,
        })),
        None => not_comparable("different labels".to_owned()),
    }
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

    #[test]
    fn if_better_promotes_ties_and_wins_only() {
        let challenger = score("new", 0.8);
        let policy = PromotePolicy::IfBetter;
        assert!(decide(policy, &challenger, &Champion::Scored(score("old", 0.8))).0);
        assert!(decide(policy, &challenger, &Champion::Scored(score("old", 0.7))).0);
        let (promoted, reason) = decide(policy, &challenger, &Champion::Scored(score("old", 0.9)));
        assert!(!promoted);
        assert!(reason.contains("0.800") && reason.contains("0.900") && reason.contains("old"));
        assert!(decide(policy, &challenger, &Champion::None).0);
    }

    #[test]
    fn not_comparable_needs_always() {
        let challenger = score("new", 0.8);
        let champion = Champion::NotComparable {
            model_id: "old".to_owned(),
            why: "different labels".to_owned(),
        };
        let (promoted, reason) = decide(PromotePolicy::IfBetter, &challenger, &champion);
        assert!(!promoted && reason.contains("different labels"), "{reason}");
        assert!(decide(PromotePolicy::Always, &challenger, &champion).0);
        assert!(!decide(PromotePolicy::Never, &challenger, &Champion::None).0);
        assert!(
            decide(
                PromotePolicy::Always,
                &challenger,
                &Champion::Scored(score("old", 1.0))
            )
            .0
        );
    }
}
