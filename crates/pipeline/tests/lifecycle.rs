//! The model lifecycle on moto's S3: champion vs challenger under each `promote` policy, the
//! append-only history under concurrent jobs, and calibrated confidence with its review queue.
//! Trained on the demo's digits (real photos of nothing: rendered digits, small and fast).

mod common;

use std::collections::BTreeSet;
use std::ops::Range;
use std::time::{Duration, Instant};

use common::stack::{INPUT, RESULTS, Stack, stack};
use pipeline::documents::{
    CurrentModel, JobResult, JobStatus, ModelChange, PredictionDocument, ReviewEntry,
};
use pipeline::handlers::RecordOutcome;
use pipeline::registry::{ChangeRequest, Registry};
use pipeline::{PipelineError, TrainerOptions, layout};
use serde_json::json;

const DIGITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/dataset");
const NEW_DIGITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../demo/new-images");

/// Uploads the digit images at `positions` (in file-name order) of each of `labels` as dataset
/// `name`.
async fn upload_digits(stack: &Stack, name: &str, labels: &[&str], positions: Range<usize>) {
    for label in labels {
        let mut files: Vec<_> = std::fs::read_dir(format!("{DIGITS}/{label}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for path in &files[positions.clone()] {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let key = format!("datasets/{name}/{label}/{file}");
            stack.put(INPUT, &key, std::fs::read(path).unwrap()).await;
        }
    }
}

const ALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Writes `jobs/<job_id>.json` and runs the trainer on it to the end.
async fn train(stack: &Stack, job_id: &str, spec: serde_json::Value) -> JobResult {
    let key = format!("jobs/{job_id}.json");
    stack.put(INPUT, &key, spec.to_string().into_bytes()).await;
    let (result, _) = stack
        .run_trainer(job_id, || Instant::now() + Duration::from_secs(600))
        .await;
    assert_eq!(result.status, JobStatus::Succeeded, "{result:?}");
    result
}

/// The full set: 12 per digit, a fifth held out.
fn full_spec(dataset: &str, promote: &str) -> serde_json::Value {
    json!({"dataset": dataset, "promote": promote, "validation_split": 0.25, "seed": 5})
}

/// Two training images per digit: a deliberately weaker model.
fn weak_spec(dataset: &str, promote: &str) -> serde_json::Value {
    json!({
        "dataset": dataset, "promote": promote, "validation_split": 0.5,
        "min_images_per_class": 2, "seed": 5
    })
}

async fn serving(stack: &Stack) -> CurrentModel {
    stack.json(layout::CURRENT_MODEL_KEY).await
}

async fn history(stack: &Stack) -> Vec<CurrentModel> {
    Registry::new(&stack.store, RESULTS)
        .history()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn champion_and_challenger_meet_on_the_same_held_out_images() {
    let stack = stack(TrainerOptions::default()).await;
    // The weak challenger's images are not the first model's: it is scored on images neither
    // model was trained on.
    upload_digits(&stack, "digits", &ALL, 0..12).await;
    upload_digits(&stack, "digits-small", &ALL, 12..18).await;
    upload_digits(&stack, "digits-three", &["0", "1", "2"], 0..12).await;

    // The first model serves: there is nothing to compare it with.
    let first = train(&stack, "first", full_spec("digits", "if_better")).await;
    let promotion = first.promotion.clone().unwrap();
    assert!(
        promotion.promoted && promotion.champion.is_none(),
        "{promotion:?}"
    );
    assert_eq!(promotion.serving, "first");
    assert_eq!(serving(&stack).await.model_id, "first");

    // A weaker challenger is kept out, with both scores on its held-out images.
    let weak = train(&stack, "weak", weak_spec("digits-small", "if_better")).await;
    let promotion = weak.promotion.clone().unwrap();
    let champion = promotion.champion.clone().expect("scored champion");
    assert_eq!(champion.model_id, "first");
    assert!(
        champion.macro_f1 > promotion.challenger.macro_f1,
        "{promotion:?}"
    );
    assert!(
        !promotion.promoted && promotion.serving == "first",
        "{promotion:?}"
    );
    assert_eq!(
        promotion.compared_on, 30,
        "10 digits × 3 held out, none seen by `first`"
    );
    assert!(
        promotion.reason.contains("not promoted"),
        "{}",
        promotion.reason
    );
    assert_eq!(serving(&stack).await.model_id, "first");

    // `never` keeps even a model as good as the champion out; `always` lets a weaker one in.
    let never = train(&stack, "never", full_spec("digits", "never")).await;
    assert!(!never.promotion.unwrap().promoted);
    let always = train(&stack, "always", weak_spec("digits-small", "always")).await;
    let promotion = always.promotion.unwrap();
    assert!(
        promotion.promoted && promotion.serving == "always",
        "{promotion:?}"
    );
    assert!(promotion.champion.unwrap().macro_f1 > promotion.challenger.macro_f1);
    assert_eq!(serving(&stack).await.model_id, "always");

    // A better challenger replaces the weak champion.
    let better = train(&stack, "better", full_spec("digits", "if_better")).await;
    let promotion = better.promotion.unwrap();
    assert!(promotion.promoted, "{promotion:?}");
    assert!(promotion.challenger.macro_f1 >= promotion.champion.unwrap().macro_f1);
    assert_eq!(serving(&stack).await.model_id, "better");

    // Retrained on the very images the champion was trained on: nothing fair to compare on.
    let again = train(&stack, "again", full_spec("digits", "if_better")).await;
    let promotion = again.promotion.unwrap();
    assert!(
        !promotion.promoted && promotion.champion.is_none(),
        "{promotion:?}"
    );
    assert!(
        promotion.reason.contains("trained on all 30"),
        "{}",
        promotion.reason
    );

    // Different labels cannot be compared: only `always` promotes.
    let three = train(&stack, "three", full_spec("digits-three", "if_better")).await;
    let promotion = three.promotion.unwrap();
    assert!(
        !promotion.promoted && promotion.champion.is_none(),
        "{promotion:?}"
    );
    assert!(
        promotion.reason.contains("different labels"),
        "{}",
        promotion.reason
    );
    let three_always = train(&stack, "three-always", full_spec("digits-three", "always")).await;
    assert!(three_always.promotion.unwrap().promoted);

    // One history entry per change, in order, each naming the model it replaced.
    let entries = history(&stack).await;
    let served: Vec<&str> = entries.iter().map(|e| e.model_id.as_str()).collect();
    assert_eq!(served, ["first", "always", "better", "three-always"]);
    let sequences: Vec<u64> = entries.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    assert_eq!(entries[0].previous_model_id, None);
    for pair in entries.windows(2) {
        assert_eq!(
            pair[1].previous_model_id.as_deref(),
            Some(pair[0].model_id.as_str())
        );
    }
    assert!(entries.iter().all(|e| e.action == ModelChange::Trained));
    assert_eq!(serving(&stack).await, entries[3]);

    // Every version stays, with its per-image evaluation and the mistakes' thumbnails.
    let versions = Registry::new(&stack.store, RESULTS)
        .versions()
        .await
        .unwrap();
    let ids: BTreeSet<&str> = versions.iter().map(|v| v.model_id.as_str()).collect();
    assert_eq!(ids.len(), 8, "{ids:?}");
    let evaluation = stack
        .store
        .get(RESULTS, "models/weak/evaluation.jsonl")
        .await
        .unwrap();
    let lines: Vec<vision::EvaluatedImage> = String::from_utf8(evaluation.bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30);
    let wrong = lines.iter().filter(|l| !l.is_correct()).count();
    let shown: Vec<pipeline::documents::Misclassified> =
        stack.json("models/weak/misclassified.json").await;
    assert_eq!(shown.len(), wrong.min(12), "{shown:?}");
    for mistake in &shown {
        let jpeg = stack
            .store
            .get(RESULTS, &mistake.thumbnail_key)
            .await
            .unwrap();
        assert!(jpeg.bytes.starts_with(&[0xFF, 0xD8]), "a JPEG");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_finishing_together_lose_no_update() {
    let stack = stack(TrainerOptions {
        workers: 1,
        ..TrainerOptions::default()
    })
    .await;
    upload_digits(&stack, "digits", &ALL, 0..6).await;
    let specs = [("left", "digits"), ("right", "digits")];
    for (job_id, dataset) in specs {
        let spec = json!({"dataset": dataset, "promote": "always", "min_images_per_class": 2});
        let key = format!("jobs/{job_id}.json");
        stack.put(INPUT, &key, spec.to_string().into_bytes()).await;
    }
    let deadline = || Instant::now() + Duration::from_secs(600);
    let (left, right) = tokio::join!(
        stack.run_trainer("left", deadline),
        stack.run_trainer("right", deadline)
    );
    assert!(left.0.promotion.unwrap().promoted && right.0.promotion.unwrap().promoted);
    let entries = history(&stack).await;
    assert_eq!(entries.len(), 2, "one entry per job: {entries:?}");
    let models: BTreeSet<&str> = entries.iter().map(|e| e.model_id.as_str()).collect();
    assert_eq!(models, BTreeSet::from(["left", "right"]));
    assert_eq!(
        entries[1].previous_model_id.as_deref(),
        Some(entries[0].model_id.as_str()),
        "the second change saw the first"
    );
    assert_eq!(serving(&stack).await, entries[1]);

    // A change made from a pointer that has moved on is refused, not applied over it.
    let registry = Registry::new(&stack.store, RESULTS);
    let stale = registry.serving().await.unwrap();
    let request = |model_id| ChangeRequest {
        model_id,
        action: ModelChange::Promoted,
        changed_by: "test",
        reason: "race".to_owned(),
    };
    let first = registry.change(stale.as_ref(), &request("left")).await;
    let second = registry.change(stale.as_ref(), &request("right")).await;
    assert_eq!(first.unwrap().unwrap().model_id, "left");
    assert_eq!(second.unwrap(), None, "the second saw a stale ETag");
    assert_eq!(serving(&stack).await.model_id, "left");
    assert_eq!(history(&stack).await.len(), 3);

    // A pointer from before there was a history: no rollback from it (nothing says what it
    // replaced), but the next change appends it, so a rollback can return to it.
    let sha = vision::BUNDLED_MODEL_SHA256;
    let legacy = json!({
        "model_id": "right", "head_key": "models/right/head.json",
        "updated_at": "2026-01-01T00:00:00Z"
    });
    stack
        .put(
            RESULTS,
            layout::CURRENT_MODEL_KEY,
            legacy.to_string().into_bytes(),
        )
        .await;
    match registry.rollback(sha).await {
        Err(PipelineError::ModelChangeRefused(message)) => {
            assert!(message.contains("predates"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let promoted = registry.promote("left", sha).await.unwrap();
    assert_eq!(promoted.sequence, 5);
    assert_eq!(promoted.previous_model_id.as_deref(), Some("right"));
    assert_eq!(history(&stack).await[3].model_id, "right");
    assert_eq!(registry.rollback(sha).await.unwrap().model_id, "right");

    // A deleted pointer (ImageNet serves again): the next change continues the history.
    stack
        .store
        .delete(RESULTS, layout::CURRENT_MODEL_KEY)
        .await
        .unwrap();
    let restarted = registry
        .change(None, &request("left"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restarted.sequence, 7);
    let sequences: Vec<u64> = history(&stack).await.iter().map(|e| e.sequence).collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5, 6, 7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thresholds_from_validation_mark_uncertain_predictions_for_review() {
    let stack = stack(TrainerOptions::default()).await;
    upload_digits(&stack, "digits", &ALL, 0..12).await;
    train(&stack, "calibrated", full_spec("digits", "if_better")).await;
    let head: vision::HeadDocument = stack.json("models/calibrated/head.json").await;
    let thresholds = head
        .thresholds
        .clone()
        .expect("thresholds stored with the head");
    assert_eq!(thresholds.source, vision::ThresholdSource::ValidationF1);
    assert_eq!(thresholds.per_label.len(), 10);
    // Each is a score the label's validation predictions reached (or 0 for none).
    let evaluated: Vec<vision::EvaluatedImage> = String::from_utf8(
        stack
            .store
            .get(RESULTS, "models/calibrated/evaluation.jsonl")
            .await
            .unwrap()
            .bytes,
    )
    .unwrap()
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    for (label, threshold) in head.labels.iter().zip(&thresholds.per_label) {
        let scores: Vec<f32> = evaluated
            .iter()
            .filter(|e| &e.predicted == label)
            .map(|e| e.score)
            .collect();
        let reached = scores.contains(threshold);
        let above_all = !scores.is_empty() && scores.iter().all(|s| s < threshold);
        let no_evidence = scores.is_empty() && *threshold == 0.0;
        assert!(
            reached || above_all || no_evidence,
            "label {label}: threshold {threshold} vs {scores:?}"
        );
    }

    // A second model with one threshold for all: 0.99. New digits, then review entries for
    // exactly the predictions below it.
    let strict = json!({
        "dataset": "digits", "promote": "always", "min_confidence": 0.99,
        "validation_split": 0.25, "seed": 5
    });
    train(&stack, "strict", strict).await;
    let head: vision::HeadDocument = stack.json("models/strict/head.json").await;
    let thresholds = head.thresholds.unwrap();
    assert_eq!(thresholds.source, vision::ThresholdSource::MinConfidence);
    assert!(thresholds.per_label.iter().all(|t| *t == 0.99));

    stack.events(&stack.input_queue).await;
    let mut names: Vec<String> = std::fs::read_dir(NEW_DIGITS)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let bytes = std::fs::read(format!("{NEW_DIGITS}/{name}")).unwrap();
        stack.put(INPUT, &format!("images/new/{name}"), bytes).await;
    }
    for event in stack.events(&stack.input_queue).await {
        for outcome in stack.trigger.handle(&event).await.unwrap() {
            assert!(
                matches!(outcome, RecordOutcome::Predicted { .. }),
                "{outcome:?}"
            );
        }
    }
    let mut uncertain = BTreeSet::new();
    for name in &names {
        let prediction: PredictionDocument =
            stack.json(&format!("predictions/new/{name}.json")).await;
        assert_eq!(prediction.model_id, "strict");
        assert_eq!(prediction.threshold, Some(0.99));
        let score = prediction.top[0].score;
        assert_eq!(prediction.confident, Some(score >= 0.99), "{prediction:?}");
        if score < 0.99 {
            uncertain.insert(format!("images/new/{name}"));
        }
    }
    assert!(!uncertain.is_empty(), "some new digit scores below 0.99");
    assert!(uncertain.len() < names.len(), "and some above");
    let listed = stack
        .store
        .list(RESULTS, layout::REVIEW_PREFIX)
        .await
        .unwrap();
    let mut queued = BTreeSet::new();
    for object in listed {
        let entry: ReviewEntry = stack.json(&object.key).await;
        assert!(entry.top_score() < entry.threshold, "{entry:?}");
        assert_eq!(
            entry.prediction_key,
            layout::prediction_key(entry.source_key.strip_prefix("images/").unwrap())
        );
        queued.insert(entry.source_key);
    }
    assert_eq!(
        queued, uncertain,
        "review entries for uncertain predictions only"
    );
    // Nothing under review/ is an event for any function.
    assert!(
        stack
            .events(&stack.results_queue)
            .await
            .iter()
            .all(|event| {
                pipeline::event::created_objects(event)
                    .iter()
                    .flatten()
                    .all(|o| !o.key.starts_with(layout::REVIEW_PREFIX))
            })
    );
}
