//! The training state machine's steps against moto, called as the state machine calls them:
//! `prepare`, one `extract` per shard (in any order, some twice), `train`, and `fail` on the
//! Catch path. The whole definition is executed by tests/test_state_machine.py; these tests pin
//! what each step does and that the Map path trains the very model the in-Lambda path trains.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::stack::{INPUT, RESULTS, SENDER, Stack, aws, stack};
use common::{job_spec as spec, stack_config};
use pipeline::documents::{JobResult, JobStatus};
use pipeline::handlers::trainer::StepError;
use pipeline::handlers::{FailureInput, FailureOutcome, FailureRecorder, TrainerOutcome};
use pipeline::{MapStep, StateMachineLauncher, Trainer, TrainerEvent, TrainerOptions};

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

/// The stack's trainer settings with shards of `shard_images` and `extra` variables.
fn map_trainer(stack: &Stack, shard_images: usize, extra: &[(&str, String)]) -> Trainer {
    let mut variables = vec![
        ("SENDER_ADDRESS", SENDER.to_owned()),
        ("MAP_SHARD_IMAGES", shard_images.to_string()),
    ];
    variables.extend(extra.iter().cloned());
    Trainer::new(
        stack_config(INPUT, RESULTS, &variables),
        stack.store.clone(),
        stack.launcher.clone(),
        Arc::new(vision::Backbone::bundled().unwrap()),
        TrainerOptions::default(),
    )
}

async fn step(trainer: &Trainer, step: MapStep) -> serde_json::Value {
    let output = trainer.handle_step(&step, deadline()).await.unwrap();
    serde_json::to_value(output).unwrap()
}

async fn keys(stack: &Stack, prefix: &str) -> Vec<String> {
    let listed = stack.store.list(RESULTS, prefix).await.unwrap();
    listed.into_iter().map(|o| o.key).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_steps_train_the_model_one_invocation_trains() {
    let stack = stack(TrainerOptions::default()).await;
    // The same images under two names, so the runs share no cached features.
    stack.upload_dataset("direct").await;
    stack.upload_dataset("mapped").await;
    stack.put(INPUT, "jobs/direct.json", spec("direct")).await;
    stack.put(INPUT, "jobs/mapped.json", spec("mapped")).await;
    let (direct, _) = stack.run_trainer("direct", deadline).await;
    assert_eq!(direct.status, JobStatus::Succeeded, "{direct:?}");

    let trainer = map_trainer(&stack, 4, &[]);
    let job_id = "mapped".to_owned();
    let prepared = step(
        &trainer,
        MapStep::Prepare {
            job_id: job_id.clone(),
        },
    )
    .await;
    assert_eq!(prepared["status"], "ready", "{prepared}");
    assert_eq!(
        (
            &prepared["images"],
            &prepared["cached"],
            &prepared["shards"]
        ),
        (&9.into(), &0.into(), &3.into()),
        "{prepared}"
    );
    assert_eq!(prepared["manifest"]["bucket"], RESULTS);
    let manifest_key = prepared["manifest"]["key"].as_str().unwrap();
    let manifest = stack.store.get(RESULTS, manifest_key).await.unwrap().bytes;
    let manifest = String::from_utf8(manifest).unwrap();
    let shards: Vec<&str> = manifest.lines().skip(1).collect();
    assert_eq!(manifest.lines().next(), Some("shard"), "{manifest}");
    assert_eq!(shards.len(), 3, "{manifest}");

    // The Map runs its children in any order, and a retried child runs again.
    for shard in [shards[2], shards[0], shards[1], shards[0]] {
        let extracted = step(
            &trainer,
            MapStep::Extract {
                job_id: job_id.clone(),
                shard: shard.to_owned(),
            },
        )
        .await;
        assert_eq!(extracted["shard"], shard);
        assert_eq!(extracted["images"], extracted["extracted"], "{extracted}");
    }
    let cached = keys(&stack, "cache/").await;
    let mapped: Vec<&String> = cached.iter().filter(|k| k.contains("/mapped/")).collect();
    let packs = mapped.iter().filter(|k| k.ends_with(".lvp")).count();
    assert_eq!(
        (packs, mapped.len()),
        (3, 6),
        "one pack and one index per shard: {mapped:?}"
    );

    // Prepared again (a re-run of the job), nothing is left to extract.
    let again = step(
        &trainer,
        MapStep::Prepare {
            job_id: job_id.clone(),
        },
    )
    .await;
    assert_eq!(
        (&again["cached"], &again["shards"]),
        (&9.into(), &0.into()),
        "{again}"
    );

    let trained = step(
        &trainer,
        MapStep::Train {
            job_id: job_id.clone(),
        },
    )
    .await;
    assert_eq!(trained["status"], "succeeded", "{trained}");
    let result: JobResult = stack.json("results/mapped.json").await;
    let (a, b) = (direct.summary.unwrap(), result.summary.unwrap());
    assert_eq!(a.labels, b.labels);
    assert_eq!(
        (a.images_train, a.images_validation, a.images_skipped),
        (b.images_train, b.images_validation, b.images_skipped)
    );
    assert_eq!(a.images_skipped, 1, "the broken JPEG is skipped, not fatal");
    assert_eq!(a.validation_accuracy, b.validation_accuracy);
    assert_eq!(a.macro_f1, b.macro_f1);
    assert_eq!(a.penalty, b.penalty);
    assert!(result.promotion.is_some(), "the same promotion rules apply");
    assert!(
        keys(&stack, "models/mapped/")
            .await
            .iter()
            .any(|k| k.ends_with("head.json")),
        "the model files are written"
    );
    // A repeated step finds the result and does nothing.
    let repeat = step(
        &trainer,
        MapStep::Train {
            job_id: job_id.clone(),
        },
    )
    .await;
    assert_eq!(repeat["status"], "already_finished");
    let finished = step(&trainer, MapStep::Prepare { job_id }).await;
    assert_eq!(finished["status"], "finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_missing_a_shard_fails_once_with_what_is_missing() {
    let stack = stack(TrainerOptions::default()).await;
    stack.upload_dataset("partial").await;
    stack.put(INPUT, "jobs/partial.json", spec("partial")).await;
    let trainer = map_trainer(&stack, 4, &[]);
    let job_id = "partial".to_owned();
    step(
        &trainer,
        MapStep::Prepare {
            job_id: job_id.clone(),
        },
    )
    .await;
    step(
        &trainer,
        MapStep::Extract {
            job_id: job_id.clone(),
            shard: "checkpoints/partial/shards/00000.json".to_owned(),
        },
    )
    .await;
    let error = trainer
        .handle_step(
            &MapStep::Train {
                job_id: job_id.clone(),
            },
            deadline(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "features_missing");
    assert!(
        error.to_string().contains("5 of the dataset's 9 images"),
        "{error}"
    );
    assert!(!error.is_transient(), "no retry can help: {error}");

    // A shard key of another job, or outside the job's shards, is refused.
    let foreign = trainer
        .handle_step(
            &MapStep::Extract {
                job_id: job_id.clone(),
                shard: "models/current.json".to_owned(),
            },
            deadline(),
        )
        .await
        .unwrap_err();
    assert_eq!(foreign.kind(), "unsafe_name", "{foreign}");

    // The Catch path records it, as Step Functions hands over a function's error.
    let diagnostic = lambda_runtime::Diagnostic::from(error);
    let caught = StepError {
        error: diagnostic.error_type.clone(),
        cause: serde_json::json!({
            "errorType": diagnostic.error_type, "errorMessage": diagnostic.error_message
        })
        .to_string(),
    };
    let fail = MapStep::Fail {
        job_id: job_id.clone(),
        error: caught,
    };
    assert_eq!(step(&trainer, fail.clone()).await["status"], "recorded");
    assert_eq!(step(&trainer, fail).await["status"], "already_recorded");
    let result: JobResult = stack.json("results/partial.json").await;
    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.notify, ["owner@example.com"], "the owner is told");
    let error = result.error.unwrap();
    assert_eq!(error.kind, "features_missing");
    assert!(
        error.message.contains("have no cached features"),
        "{}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_job_is_handed_to_the_state_machine_once() {
    let stack = stack(TrainerOptions::default()).await;
    let sfn = aws_sdk_sfn::Client::new(&aws(&stack.s3_moto.url).await);
    let machine = sfn
        .create_state_machine()
        .name("lambda-vision-training")
        .role_arn("arn:aws:iam::123456789012:role/training")
        .definition(r#"{"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": true}}}"#)
        .send()
        .await
        .unwrap();
    let arn = machine.state_machine_arn().to_owned();
    stack.upload_dataset("big").await;
    stack.put(INPUT, "jobs/big.json", spec("big")).await;
    let trainer = map_trainer(&stack, 4, &[("MAP_THRESHOLD_IMAGES", "8".to_owned())])
        .with_state_machine(Arc::new(StateMachineLauncher::new(
            &aws(&stack.s3_moto.url).await,
            arn.clone(),
        )));
    let event = TrainerEvent {
        job_id: "big".to_owned(),
        continuation: 0,
    };
    for _ in 0..2 {
        let outcome = trainer.handle(&event, deadline()).await.unwrap();
        assert_eq!(outcome, TrainerOutcome::HandedToStateMachine { images: 9 });
    }
    let executions = sfn
        .list_executions()
        .state_machine_arn(&arn)
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = executions.executions().iter().map(|e| e.name()).collect();
    assert_eq!(names, ["big"], "one execution per job, named after it");
    let execution = sfn
        .describe_execution()
        .execution_arn(executions.executions()[0].execution_arn())
        .send()
        .await
        .unwrap();
    let input: serde_json::Value = serde_json::from_str(execution.input().unwrap()).unwrap();
    assert_eq!(input, serde_json::json!({"job_id": "big"}));
    assert!(
        keys(&stack, "cache/").await.is_empty(),
        "nothing extracted in-Lambda"
    );
    assert!(keys(&stack, "results/").await.is_empty(), "no result yet");

    // At or under the threshold, the job runs in the trainer as before.
    let small = map_trainer(&stack, 4, &[("MAP_THRESHOLD_IMAGES", "9".to_owned())])
        .with_state_machine(Arc::new(StateMachineLauncher::new(
            &aws(&stack.s3_moto.url).await,
            arn,
        )));
    stack.upload_dataset("small").await;
    stack.put(INPUT, "jobs/small.json", spec("small")).await;
    let outcome = small
        .handle(
            &TrainerEvent {
                job_id: "small".to_owned(),
                continuation: 0,
            },
            deadline(),
        )
        .await
        .unwrap();
    assert!(
        matches!(&outcome, TrainerOutcome::Finished(r) if r.status == JobStatus::Succeeded),
        "{outcome:?}"
    );
}

/// A dataset whose features would not fit the trainer's memory is refused by `prepare`, before
/// any extraction is paid for (the same check runs on the in-Lambda path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_too_big_for_the_trainers_memory_is_refused_before_any_work() {
    let stack = stack(TrainerOptions::default()).await;
    stack.upload_dataset("huge").await;
    stack.put(INPUT, "jobs/huge.json", spec("huge")).await;
    // 256 MB is the trainer's base alone: nine images' features do not fit beside it.
    let trainer = map_trainer(
        &stack,
        4,
        &[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".to_owned())],
    );
    let error = trainer
        .handle_step(
            &MapStep::Prepare {
                job_id: "huge".to_owned(),
            },
            deadline(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "invalid_spec", "{error}");
    assert!(
        error
            .to_string()
            .contains("9 images of 2 labels need about")
            && error.to_string().contains("TrainerMemory"),
        "{error}"
    );
    assert!(keys(&stack, "checkpoints/huge/shards").await.is_empty());
    // With the memory Lambda gives by default, the same job is prepared.
    let roomy = map_trainer(
        &stack,
        4,
        &[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "2048".to_owned())],
    );
    let prepared = step(
        &roomy,
        MapStep::Prepare {
            job_id: "huge".to_owned(),
        },
    )
    .await;
    assert_eq!(prepared["status"], "ready", "{prepared}");
}

/// An execution that ends without a result (stopped by hand, timed out, an error no Catch can
/// take) reaches the failure recorder through EventBridge: one failed result for the owner;
/// the event again, or for a job the Catch already recorded, writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_that_ends_without_a_result_gets_one() {
    let stack = stack(TrainerOptions::default()).await;
    stack.put(INPUT, "jobs/stopped.json", spec("stopped")).await;
    let recorder = FailureRecorder::new(stack_config(INPUT, RESULTS, &[]), stack.store.clone());
    // EventBridge's "Step Functions Execution Status Change", as AWS documents it.
    let event = serde_json::json!({
        "version": "0", "id": "315c1398-40ff-a850-213b-158f73e60175",
        "detail-type": "Step Functions Execution Status Change", "source": "aws.states",
        "account": "123456789012", "time": "2026-12-05T14:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:states:us-east-1:123456789012:execution:lv-training:stopped"],
        "detail": {
            "executionArn": "arn:aws:states:us-east-1:123456789012:execution:lv-training:stopped",
            "stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:lv-training",
            "name": "stopped", "status": "ABORTED", "startDate": 1_764_943_200_000_i64,
            "stopDate": 1_764_943_260_000_i64, "input": "{\"job_id\":\"stopped\"}",
            "inputDetails": {"included": true}, "output": null, "error": null, "cause": null
        }
    });
    let input: FailureInput = serde_json::from_value(event).unwrap();
    let first = recorder.handle_input(&input).await.unwrap();
    assert!(
        matches!(&first[..], [FailureOutcome::JobFailed { job_id }] if job_id == "stopped"),
        "{first:?}"
    );
    let again = recorder.handle_input(&input).await.unwrap();
    assert!(
        matches!(&again[..], [FailureOutcome::AlreadyRecorded { .. }]),
        "{again:?}"
    );
    let result: JobResult = stack.json("results/stopped.json").await;
    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.notify, ["owner@example.com"]);
    let error = result.error.unwrap();
    assert_eq!(error.kind, "state_machine_ended");
    assert!(error.message.contains("ended ABORTED"), "{}", error.message);
}

/// Step Functions reports a failed Map only as `States.ExceedToleratedFailureThreshold`; the
/// failed result names the shard and its own error instead, and a shard that failed once and
/// then succeeded is not blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_map_is_reported_with_the_shard_and_its_error() {
    let stack = stack(TrainerOptions::default()).await;
    stack.upload_dataset("blamed").await;
    stack.put(INPUT, "jobs/blamed.json", spec("blamed")).await;
    let trainer = map_trainer(&stack, 4, &[]);
    let job_id = "blamed".to_owned();
    step(
        &trainer,
        MapStep::Prepare {
            job_id: job_id.clone(),
        },
    )
    .await;
    let shard = |n: usize| format!("checkpoints/blamed/shards/{n:05}.json");
    let extract = |n: usize| MapStep::Extract {
        job_id: job_id.clone(),
        shard: shard(n),
    };
    // Shard 0 fails once (its document is gone), then succeeds once it is back.
    let saved = stack.store.get(RESULTS, &shard(0)).await.unwrap().bytes;
    stack.store.delete(RESULTS, &shard(0)).await.unwrap();
    assert!(trainer.handle_step(&extract(0), deadline()).await.is_err());
    assert!(
        !keys(&stack, "checkpoints/blamed/shard-errors/")
            .await
            .is_empty()
    );
    stack.put(RESULTS, &shard(0), saved).await;
    step(&trainer, extract(0)).await;
    assert!(
        keys(&stack, "checkpoints/blamed/shard-errors/")
            .await
            .is_empty(),
        "a shard that succeeded is forgotten"
    );
    // Shard 2 fails for good.
    stack.store.delete(RESULTS, &shard(2)).await.unwrap();
    let error = trainer
        .handle_step(&extract(2), deadline())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "not_found");

    let caught = StepError {
        error: "States.ExceedToleratedFailureThreshold".to_owned(),
        cause: "The specified tolerated failure threshold was exceeded".to_owned(),
    };
    let fail = MapStep::Fail {
        job_id,
        error: caught,
    };
    assert_eq!(step(&trainer, fail).await["status"], "recorded");
    let result: JobResult = stack.json("results/blamed.json").await;
    let error = result.error.unwrap();
    assert_eq!(error.kind, "not_found", "{error:?}");
    assert!(
        error.message.starts_with(
            "1 shard(s) failed after their retries; checkpoints/blamed/shards/00002.json: "
        ) && error.message.contains("does not exist"),
        "{}",
        error.message
    );
}

/// A reclassification: a spec with `classify` runs through the same steps. Every image under
/// the prefix (and only there) gets a prediction from the model serving when the job was
/// prepared, equal to the upload trigger's for the same bytes; an older model's prediction of
/// the same image version is replaced; a broken image is counted, not fatal; the result lists
/// the counts per label and one CSV of every image; the owner gets one email. Without a state
/// machine the job fails saying what it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_is_reclassified_with_the_serving_model() {
    use pipeline::documents::{PredictionDocument, PredictionRow};
    use pipeline::handlers::RecordOutcome;

    let stack = stack(TrainerOptions::default()).await;
    let mut images: Vec<(String, Vec<u8>)> = common::dataset_objects("x")
        .into_iter()
        .map(|(key, bytes)| (key.replacen("datasets/x/", "images/2025/", 1), bytes))
        .collect();
    images.sort();
    for (key, bytes) in &images {
        stack.put(INPUT, key, bytes.clone()).await;
    }
    stack
        .put(INPUT, "images/2024/old.jpg", images[0].1.clone())
        .await;
    // Uploaded before any model is trained: the ImageNet classes.
    for event in stack.events(&stack.input_queue).await {
        stack.trigger.handle(&event).await.unwrap();
    }
    let first: PredictionDocument = stack
        .json(&format!(
            "{}.json",
            images[0].0.replacen("images/", "predictions/", 1)
        ))
        .await;
    assert_eq!(first.model_id, "imagenet");

    stack.upload_dataset("pets").await;
    stack.put(INPUT, "jobs/pets.json", spec("pets")).await;
    let (trained, _) = stack.run_trainer("pets", deadline).await;
    assert!(
        trained.promotion.unwrap().promoted,
        "the first model serves"
    );

    let classify = serde_json::json!({
        "classify": {"prefix": "images/2025/"}, "notify": ["owner@example.com"]
    });
    stack
        .put(INPUT, "jobs/re.json", classify.to_string().into_bytes())
        .await;
    stack
        .put(
            INPUT,
            "jobs/re-here.json",
            classify.to_string().into_bytes(),
        )
        .await;
    // Outside the stack (no state machine) the job fails, saying what it needs.
    let (alone, _) = stack.run_trainer("re-here", deadline).await;
    let error = alone.error.unwrap();
    assert_eq!(error.kind, "missing_config", "{error:?}");
    assert!(error.message.contains("STATE_MACHINE_ARN"), "{error:?}");
    assert_eq!(alone.prefix.as_deref(), Some("images/2025/"));

    let trainer = map_trainer(&stack, 4, &[]);
    let job_id = "re".to_owned();
    let prepared = step(
        &trainer,
        MapStep::Prepare {
            job_id: job_id.clone(),
        },
    )
    .await;
    let shards = images.len().div_ceil(4);
    assert_eq!(
        (&prepared["images"], &prepared["shards"]),
        (&images.len().into(), &shards.into()),
        "{prepared}"
    );
    // One image is replaced after the job listed it: the job leaves it to its own event.
    let replaced = &images
        .iter()
        .find(|(key, _)| !key.ends_with("broken.jpg"))
        .unwrap()
        .0;
    stack
        .put(INPUT, replaced, b"another version".to_vec())
        .await;
    // Every image was queued for review by the old model.
    let review_key = |key: &str| format!("review/{}.json", key.strip_prefix("images/").unwrap());
    for (key, _) in &images {
        stack.put(RESULTS, &review_key(key), b"{}".to_vec()).await;
    }
    // Any order, one shard twice (a retried child).
    let mut order: Vec<usize> = (0..shards).rev().collect();
    order.push(0);
    for n in order {
        let shard = format!("checkpoints/re/shards/{n:05}.json");
        let done = step(
            &trainer,
            MapStep::Extract {
                job_id: job_id.clone(),
                shard: shard.clone(),
            },
        )
        .await;
        assert_eq!(done["images"], done["extracted"], "{done}");
    }
    let finished = step(
        &trainer,
        MapStep::Train {
            job_id: job_id.clone(),
        },
    )
    .await;
    assert_eq!(finished["status"], "succeeded", "{finished}");

    let result: JobResult = stack.json("results/re.json").await;
    assert_eq!(result.status, JobStatus::Succeeded);
    assert_eq!(result.prefix.as_deref(), Some("images/2025/"));
    let found = result.classification.unwrap();
    assert_eq!(found.model_id, "pets");
    assert_eq!(
        (found.images, found.predicted),
        (images.len(), images.len() - 2)
    );
    let mut errors: Vec<(&str, usize)> = found
        .errors
        .iter()
        .map(|e| (e.label.as_str(), e.images))
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [("superseded", 1), ("truncated", 1)],
        "the broken JPEG and the replaced image"
    );
    assert_eq!(
        found.labels.iter().map(|l| l.images).sum::<usize>(),
        found.predicted
    );
    let csv = stack
        .store
        .get(RESULTS, &found.predictions_csv)
        .await
        .unwrap()
        .bytes;
    let rows: Vec<PredictionRow> = csv::Reader::from_reader(csv.as_slice())
        .deserialize()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut listed: Vec<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    listed.sort();
    let expected: Vec<&str> = images.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(listed, expected, "one row per image under the prefix, once");

    // The same bytes uploaded now: the upload trigger's prediction equals the job's.
    stack.events(&stack.input_queue).await;
    for (key, bytes) in &images {
        stack
            .put(
                INPUT,
                &key.replacen("images/2025/", "images/check/", 1),
                bytes.clone(),
            )
            .await;
    }
    for event in stack.events(&stack.input_queue).await {
        for outcome in stack.trigger.handle(&event).await.unwrap() {
            assert!(
                matches!(
                    outcome,
                    RecordOutcome::Predicted { .. } | RecordOutcome::ImageRejected { .. }
                ),
                "{outcome:?}"
            );
        }
    }
    for row in &rows {
        let path = row.key.strip_prefix("images/").unwrap();
        let queued = stack
            .store
            .get_if_exists(RESULTS, &review_key(&row.key))
            .await
            .unwrap()
            .is_some();
        let doubtful = row.confident == Some(false) || &row.key == replaced;
        assert_eq!(queued, doubtful, "review entry of {row:?}");
        if &row.key == replaced {
            assert_eq!(row.error.as_deref(), Some("superseded"), "{row:?}");
            let kept: PredictionDocument = stack.json(&format!("predictions/{path}.json")).await;
            assert_eq!(
                kept.model_id, "imagenet",
                "the old version's, for its event to replace"
            );
            continue;
        }
        assert_eq!(row.model_id.as_deref(), Some("pets"), "{row:?}");
        let job: PredictionDocument = stack.json(&format!("predictions/{path}.json")).await;
        let check: PredictionDocument = stack
            .json(&format!(
                "predictions/{}.json",
                path.replacen("2025/", "check/", 1)
            ))
            .await;
        assert_eq!(job.model_id, "pets", "{job:?}");
        assert_eq!(job.top, check.top, "{}", row.key);
        assert_eq!(
            job.error.as_ref().map(|e| &e.kind),
            check.error.as_ref().map(|e| &e.kind)
        );
        assert_eq!(row.label.as_ref(), job.top.first().map(|t| &t.label));
        assert_eq!(row.error.as_ref(), job.error.as_ref().map(|e| &e.kind));
    }
    assert!(
        stack
            .store
            .get_if_exists(RESULTS, "predictions/2024/old.jpg.json")
            .await
            .unwrap()
            .is_some_and(|o| String::from_utf8_lossy(&o.bytes).contains("\"imagenet\"")),
        "outside the prefix nothing changes"
    );

    // One email, however often the result event comes.
    let repeat = step(&trainer, MapStep::Train { job_id }).await;
    assert_eq!(repeat["status"], "already_finished");
    for event in stack.events(&stack.results_queue).await {
        stack.notifier.handle(&event).await.unwrap();
        stack.notifier.handle(&event).await.unwrap();
    }
    let emails = stack.ses_moto.sent_emails();
    let subjects: Vec<String> = emails
        .iter()
        .map(|e| e.to_string())
        .filter(|e| e.contains("job re succeeded"))
        .collect();
    assert_eq!(subjects.len(), 1, "{emails:?}");
    assert!(
        subjects[0].contains(&format!(
            "{} of {} images classified",
            found.predicted, found.images
        )),
        "{}",
        subjects[0]
    );
}
