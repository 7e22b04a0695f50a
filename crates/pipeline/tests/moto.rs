//! The real handlers against real local AWS APIs: moto's S3, SQS (for the event notifications
//! S3 really sends) and SES v2, started on free loopback ports and stopped when the test ends.
//! `pip install 'moto[server]'` provides `moto_server` (`.ci/run` installs it).

mod common;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::stack::{INPUT, RESULTS, SENDER, aws, stack, stack_with};
use common::{fixture, job_spec as spec, stack_config};
use pipeline::documents::PredictionDocument;
use pipeline::documents::{JobResult, JobStatus};
use pipeline::handlers::RecordOutcome;
use pipeline::handlers::TrainerOutcome;
use pipeline::handlers::{FailureRecorder, InvocationRecord, NotifyOutcome};
use pipeline::{Notifier, SesMailer, TrainerEvent, TrainerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_from_upload_to_exactly_one_email() {
    let stack = stack(TrainerOptions {
        chunk_size: 4,
        ..TrainerOptions::default()
    })
    .await;
    stack.upload_dataset("pets").await;
    stack.put(INPUT, "jobs/pets-1.json", spec("pets")).await;

    // The upload trigger gets what S3 really sent: datasets/ has no trigger, jobs/ does.
    let events = stack.events(&stack.input_queue).await;
    let mut outcomes = Vec::new();
    for event in &events {
        outcomes.extend(stack.trigger.handle(event).await.unwrap());
    }
    assert_eq!(
        outcomes,
        [RecordOutcome::JobStarted {
            job_id: "pets-1".into()
        }]
    );
    assert_eq!(
        *stack.launcher.started.lock().unwrap(),
        [("pets-1".to_owned(), 0)]
    );

    let (result, continuations) = stack
        .run_trainer("pets-1", || Instant::now() + Duration::from_secs(600))
        .await;
    assert_eq!(
        (result.status, continuations),
        (JobStatus::Succeeded, 0),
        "{result:?}"
    );
    let summary = result.summary.clone().unwrap();
    assert_eq!(summary.labels, ["cat", "coffee"]);
    assert_eq!(summary.images_skipped, 1);
    assert_eq!(summary.images_train + summary.images_validation, 8);
    for file in ["model.onnx", "head.json", "metrics.json"] {
        assert!(
            stack
                .store
                .get_if_exists(RESULTS, &format!("models/pets-1/{file}"))
                .await
                .unwrap()
                .is_some(),
            "{file}"
        );
    }
    let current: serde_json::Value = stack.json("models/current.json").await;
    assert_eq!(current["model_id"], "pets-1");
    let metrics: vision::Metrics = stack.json("models/pets-1/metrics.json").await;
    assert_eq!(metrics.skipped[0].key, "datasets/pets/coffee/broken.jpg");

    // The result's creation reaches the notifier through S3's own notification.
    let result_events = stack.events(&stack.results_queue).await;
    let mut notified = Vec::new();
    for event in &result_events {
        notified.extend(stack.notifier.handle(event).await.unwrap());
    }
    assert!(
        matches!(notified.as_slice(), [NotifyOutcome::Sent { job_id, .. }] if job_id == "pets-1"),
        "{notified:?}"
    );
    // A duplicate delivery, and ten concurrent ones, send nothing more.
    let duplicate = result_events
        .iter()
        .find(|e| !e.records.is_empty())
        .unwrap()
        .clone();
    let handles: Vec<_> = (0..10).map(|_| stack.notifier.handle(&duplicate)).collect();
    for outcome in futures::future::join_all(handles).await {
        assert!(matches!(
            outcome.unwrap().as_slice(),
            [NotifyOutcome::AlreadyHandled { .. }]
        ));
    }
    let emails = stack.ses_moto.sent_emails();
    assert_eq!(emails.len(), 1, "{emails:?}");
    let raw = emails[0].to_string();
    assert!(
        raw.contains("pets-1") && raw.contains("validation accuracy"),
        "{raw}"
    );

    // A duplicate trainer invocation finds the result and does nothing.
    let again = stack
        .trainer
        .handle(
            &TrainerEvent {
                job_id: "pets-1".into(),
                continuation: 0,
            },
            Instant::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(again, TrainerOutcome::AlreadyFinished);

    // Images are classified with the trained model; a corrupt one gets an error document.
    stack
        .put(INPUT, "images/holiday/my cat.jpg", fixture("chelsea.jpg"))
        .await;
    stack
        .put(
            INPUT,
            "images/broken.png",
            fixture("chelsea_256.png")[..300].to_vec(),
        )
        .await;
    let image_events = stack.events(&stack.input_queue).await;
    for event in &image_events {
        stack.trigger.handle(event).await.unwrap();
    }
    // The same image event again: one prediction write per object version.
    let cat_event = image_events
        .iter()
        .find(|e| {
            e.records.iter().any(|r| {
                r.s3.object
                    .key
                    .as_deref()
                    .is_some_and(|k| k.contains("cat"))
            })
        })
        .unwrap();
    let before = stack
        .store
        .get(RESULTS, "predictions/holiday/my cat.jpg.json")
        .await
        .unwrap()
        .etag;
    let again = stack.trigger.handle(cat_event).await.unwrap();
    assert!(
        matches!(again.as_slice(), [RecordOutcome::AlreadyPredicted { .. }]),
        "{again:?}"
    );
    assert_eq!(
        stack
            .store
            .get(RESULTS, "predictions/holiday/my cat.jpg.json")
            .await
            .unwrap()
            .etag,
        before
    );
    let cat: PredictionDocument = stack.json("predictions/holiday/my cat.jpg.json").await;
    assert_eq!(
        (cat.model_id.as_str(), cat.top[0].label.as_str()),
        ("pets-1", "cat")
    );
    assert_eq!((cat.width, cat.height), (Some(451), Some(300)));
    let broken: PredictionDocument = stack.json("predictions/broken.png.json").await;
    assert_eq!(broken.error.unwrap().kind, "truncated");
    assert!(broken.top.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_fails_fast_with_a_result_and_an_email() {
    let stack = stack(TrainerOptions::default()).await;
    stack
        .put(
            INPUT,
            "jobs/bad-1.json",
            br#"{"dataset":"pets","epochs":0,"notify":["owner@example.com"]}"#.to_vec(),
        )
        .await;
    for event in stack.events(&stack.input_queue).await {
        assert_eq!(
            stack.trigger.handle(&event).await.unwrap().len(),
            usize::from(!event.records.is_empty())
        );
    }
    assert!(
        stack.launcher.started.lock().unwrap().is_empty(),
        "no trainer for a bad spec"
    );
    let result: JobResult = stack.json("results/bad-1.json").await;
    assert_eq!(result.status, JobStatus::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, "invalid_spec");
    assert!(error.message.contains("`epochs`"), "{}", error.message);
    for event in stack.events(&stack.results_queue).await {
        stack.notifier.handle(&event).await.unwrap();
    }
    let emails = stack.ses_moto.sent_emails();
    assert_eq!(emails.len(), 1);
    assert!(
        emails[0].to_string().contains("bad-1 failed"),
        "{}",
        emails[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuations_forced_by_a_tiny_deadline_give_the_same_model() {
    let stack = stack(TrainerOptions {
        chunk_size: 3,
        ..TrainerOptions::default()
    })
    .await;
    // Same images under two dataset names, so the runs share no cached features.
    stack.upload_dataset("once").await;
    stack.upload_dataset("chain").await;
    stack.put(INPUT, "jobs/once.json", spec("once")).await;
    stack.put(INPUT, "jobs/chain.json", spec("chain")).await;

    let (once, none) = stack
        .run_trainer("once", || Instant::now() + Duration::from_secs(600))
        .await;
    // A deadline that has always just passed: each invocation does one chunk and hands over.
    let (chain, continuations) = stack.run_trainer("chain", Instant::now).await;
    assert_eq!(none, 0);
    assert_eq!(continuations, 2, "9 images in chunks of 3");
    assert_eq!(chain.continuations, 2);
    let started = stack.launcher.started.lock().unwrap().clone();
    assert_eq!(started, [("chain".to_owned(), 1), ("chain".to_owned(), 2)]);

    let head = |job: &str| {
        let stack = &stack;
        let job = job.to_owned();
        async move {
            stack
                .json::<serde_json::Value>(&format!("models/{job}/head.json"))
                .await
        }
    };
    let (a, b) = (head("once").await, head("chain").await);
    assert_eq!(
        a["weights"], b["weights"],
        "identical features and seed give identical weights"
    );
    assert_eq!(
        once.summary.unwrap().validation_accuracy,
        chain.summary.unwrap().validation_accuracy
    );
    // Checkpoints are cleaned up once the result exists.
    assert!(
        stack
            .store
            .get_if_exists(RESULTS, "checkpoints/chain/progress.json")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_trained_at_another_input_size_classifies_uploads() {
    let stack = stack(TrainerOptions::default()).await;
    stack.upload_dataset("small").await;
    let spec = serde_json::json!({
        "dataset": "small", "min_images_per_class": 2, "validation_split": 0.25,
        "seed": 3, "input_size": 160
    });
    stack
        .put(INPUT, "jobs/small-160.json", spec.to_string().into_bytes())
        .await;
    let (result, _) = stack
        .run_trainer("small-160", || Instant::now() + Duration::from_secs(600))
        .await;
    assert_eq!(result.status, JobStatus::Succeeded, "{result:?}");
    stack.events(&stack.input_queue).await;
    stack
        .put(INPUT, "images/new/cat.jpg", fixture("chelsea.jpg"))
        .await;
    let mut outcomes = Vec::new();
    for event in stack.events(&stack.input_queue).await {
        outcomes.extend(stack.trigger.handle(&event).await.unwrap());
    }
    assert!(
        matches!(&outcomes[..], [RecordOutcome::Predicted { model_id, .. }] if model_id == "small-160"),
        "{outcomes:?}"
    );
    let prediction: serde_json::Value = stack.json("predictions/new/cat.jpg.json").await;
    assert_eq!(prediction["top"][0]["label"], "cat", "{prediction}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_events_duplicated_or_out_of_order_start_one_run_with_the_newest_spec() {
    let stack = stack(TrainerOptions::default()).await;
    stack.upload_dataset("pets").await;
    stack.events(&stack.input_queue).await;
    // Version 1 names a dataset that does not exist; version 2 fixes it.
    stack
        .put(INPUT, "jobs/redo.json", spec("nothing-here"))
        .await;
    let older = stack.events(&stack.input_queue).await;
    stack.put(INPUT, "jobs/redo.json", spec("pets")).await;
    let newer = stack.events(&stack.input_queue).await;
    assert_eq!((older.len(), newer.len()), (1, 1));

    // The newer event arrives ten times at once, then the older one, late.
    let deliveries = (0..10).map(|_| stack.trigger.handle(&newer[0]));
    let outcomes: Vec<RecordOutcome> = futures::future::join_all(deliveries)
        .await
        .into_iter()
        .flat_map(|outcome| outcome.unwrap())
        .chain(stack.trigger.handle(&older[0]).await.unwrap())
        .collect();
    let started = outcomes
        .iter()
        .filter(|o| matches!(o, RecordOutcome::JobStarted { .. }))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, RecordOutcome::JobAlreadyStarted { .. }))
        .count();
    assert_eq!((started, duplicates), (1, 10), "{outcomes:?}");
    assert_eq!(stack.launcher.started.lock().unwrap().len(), 1);

    // An image event delivered ten times at once: one prediction write for that version.
    stack
        .put(INPUT, "images/twice/cat.jpg", fixture("chelsea.jpg"))
        .await;
    let image_events = stack.events(&stack.input_queue).await;
    let image_event = image_events.iter().find(|e| !e.records.is_empty()).unwrap();
    let outcomes: Vec<RecordOutcome> =
        futures::future::join_all((0..10).map(|_| stack.trigger.handle(image_event)))
            .await
            .into_iter()
            .flat_map(|outcome| outcome.unwrap())
            .collect();
    let predicted = outcomes
        .iter()
        .filter(|o| matches!(o, RecordOutcome::Predicted { .. }))
        .count();
    assert_eq!(predicted, 1, "{outcomes:?}");
    assert_eq!(outcomes.len(), 10);

    // The run uses the newest spec, even if the spec changes again while it runs.
    stack
        .put(INPUT, "jobs/redo.json", spec("nothing-here"))
        .await;
    let (result, _) = stack
        .run_trainer("redo", || Instant::now() + Duration::from_secs(600))
        .await;
    assert_eq!(result.status, JobStatus::Succeeded, "{result:?}");
    assert_eq!(result.dataset.as_deref(), Some("pets"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_past_its_continuation_cap_fails_instead_of_looping() {
    let stack = stack_with(
        TrainerOptions {
            chunk_size: 2,
            ..TrainerOptions::default()
        },
        2,
    )
    .await;
    stack.upload_dataset("long").await;
    stack.put(INPUT, "jobs/long.json", spec("long")).await;
    // 9 images in chunks of 2 need 4 hand-overs; only 2 are allowed.
    let (result, continuations) = stack.run_trainer("long", Instant::now).await;
    assert_eq!(continuations, 2);
    assert_eq!(result.status, JobStatus::Failed);
    let message = result.error.unwrap().message;
    assert!(message.contains("2 continuations"), "{message}");
    assert!(message.contains("6 of 9 images"), "{message}");
    // The failed result still notifies its owner, once.
    for event in stack.events(&stack.results_queue).await {
        stack.notifier.handle(&event).await.unwrap();
    }
    assert_eq!(stack.ses_moto.sent_emails().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_email_fails_the_invocation_and_its_retry_sends_once() {
    let stack = stack(TrainerOptions::default()).await;
    let ses = aws_sdk_sesv2::Client::new(&aws(&stack.ses_moto.url).await);
    ses.delete_email_identity()
        .email_identity(SENDER)
        .send()
        .await
        .unwrap();
    stack
        .put(
            INPUT,
            "jobs/mail.json",
            br#"{"dataset":"x","epochs":0,"notify":["owner@example.com"]}"#.to_vec(),
        )
        .await;
    for event in stack.events(&stack.input_queue).await {
        stack.trigger.handle(&event).await.unwrap();
    }
    let events = stack.events(&stack.results_queue).await;
    let event = events.iter().find(|e| !e.records.is_empty()).unwrap();
    // SES refuses an unverified sender: the error reaches Lambda, which retries.
    let error = stack.notifier.handle(event).await.unwrap_err();
    assert_eq!(error.kind(), "email", "{error}");
    let record: serde_json::Value = stack.json("notifications/mail.json").await;
    assert_eq!(record["state"], "failed", "{record}");
    assert!(stack.ses_moto.sent_emails().is_empty());
    // Once the identity is verified, the retry sends exactly one email; later retries send none.
    ses.create_email_identity()
        .email_identity(SENDER)
        .send()
        .await
        .unwrap();
    let outcomes = stack.notifier.handle(event).await.unwrap();
    assert!(
        matches!(outcomes[..], [NotifyOutcome::Sent { .. }]),
        "{outcomes:?}"
    );
    for _ in 0..3 {
        let outcomes = stack.notifier.handle(event).await.unwrap();
        assert!(
            matches!(outcomes[..], [NotifyOutcome::AlreadyHandled { .. }]),
            "{outcomes:?}"
        );
    }
    assert_eq!(stack.ses_moto.sent_emails().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recipients_come_from_the_spec_never_from_object_metadata() {
    let stack = stack(TrainerOptions::default()).await;
    stack
        .store
        .client()
        .put_object()
        .bucket(INPUT)
        .key("jobs/meta.json")
        .metadata("notify", "attacker@evil.example")
        .metadata("recipients", "attacker@evil.example")
        .body(
            br#"{"dataset":"x","epochs":0,"notify":["owner@example.com"]}"#
                .to_vec()
                .into(),
        )
        .send()
        .await
        .unwrap();
    for event in stack.events(&stack.input_queue).await {
        stack.trigger.handle(&event).await.unwrap();
    }
    for event in stack.events(&stack.results_queue).await {
        stack.notifier.handle(&event).await.unwrap();
    }
    let emails = stack.ses_moto.sent_emails();
    assert_eq!(emails.len(), 1);
    let email = emails[0].to_string();
    assert!(email.contains("owner@example.com"), "{email}");
    assert!(!email.contains("attacker"), "{email}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datasets_over_the_limits_fail_their_job_before_any_work() {
    let stack = stack(TrainerOptions {
        max_dataset_images: 8,
        ..TrainerOptions::default()
    })
    .await;
    stack.upload_dataset("big").await;
    stack.put(INPUT, "jobs/big.json", spec("big")).await;
    let (result, _) = stack
        .run_trainer("big", || Instant::now() + Duration::from_secs(600))
        .await;
    assert_eq!(result.status, JobStatus::Failed);
    let error = result.error.unwrap();
    assert_eq!(error.kind, "invalid_spec");
    assert!(
        error
            .message
            .contains("more than 8 images under datasets/big/, at most 8 per job"),
        "{}",
        error.message
    );
    let cached = stack.store.list(RESULTS, "cache/").await.unwrap();
    assert!(cached.is_empty(), "nothing was extracted");
}

// ------------------------------------------------------------ failure gaps (nothing lost)

/// A late event for an image version that a newer upload replaced reads nothing (the GET is
/// pinned to the event's ETag) and writes nothing; the newer version's own event classifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_event_for_a_replaced_image_classifies_nothing() {
    let stack = stack(TrainerOptions::default()).await;
    stack
        .put(INPUT, "images/pet.jpg", fixture("chelsea.jpg"))
        .await;
    stack
        .put(INPUT, "images/pet.jpg", fixture("coffee.jpg"))
        .await;
    let events = stack.events(&stack.input_queue).await;
    assert_eq!(events.len(), 2);
    // The older version's event arrives last: handle it first, as if it had been delayed.
    let outcomes = stack.trigger.handle(&events[0]).await.unwrap();
    assert!(
        matches!(outcomes[..], [RecordOutcome::Superseded { .. }]),
        "{outcomes:?}"
    );
    assert!(
        stack
            .store
            .get_if_exists(RESULTS, "predictions/pet.jpg.json")
            .await
            .unwrap()
            .is_none(),
        "nothing recorded against the old ETag"
    );
    stack.trigger.handle(&events[1]).await.unwrap();
    let prediction: PredictionDocument = stack.json("predictions/pet.jpg.json").await;
    let newest = events[1].records[0].s3.object.e_tag.clone();
    assert_eq!(prediction.source_etag, newest);
    assert!(
        ["espresso", "cup", "coffee mug"].contains(&prediction.top[0].label.as_str()),
        "{:?}",
        prediction.top
    );
}

/// Problems a retry cannot fix are recorded where the user looks and acknowledged: a broken
/// `models/current.json` and an image deleted before its GET give error predictions; a
/// notifier without a sender records why the report was not sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_problems_are_recorded_and_acknowledged() {
    let stack = stack(TrainerOptions::default()).await;
    stack
        .put(RESULTS, "models/current.json", b"{not json".to_vec())
        .await;
    stack
        .put(INPUT, "images/a.jpg", fixture("chelsea.jpg"))
        .await;
    stack
        .put(INPUT, "images/gone.jpg", fixture("coffee.jpg"))
        .await;
    stack.store.delete(INPUT, "images/gone.jpg").await.unwrap();
    for event in stack.events(&stack.input_queue).await {
        let outcomes = stack.trigger.handle(&event).await.unwrap();
        assert!(
            matches!(outcomes[..], [RecordOutcome::ImageRejected { .. }]),
            "{outcomes:?}"
        );
    }
    let broken: PredictionDocument = stack.json("predictions/a.jpg.json").await;
    let error = broken.error.unwrap();
    assert_eq!(error.kind, "bad_document");
    assert!(
        error.message.contains("models/current.json"),
        "{}",
        error.message
    );
    let gone: PredictionDocument = stack.json("predictions/gone.jpg.json").await;
    assert_eq!(gone.error.unwrap().kind, "not_found");

    // No SENDER_ADDRESS: recorded as undeliverable with the reason, not retried.
    let notifier = Notifier::new(
        stack_config(INPUT, RESULTS, &[]),
        stack.store.clone(),
        Arc::new(SesMailer::new(&aws(&stack.ses_moto.url).await)),
    );
    stack.put_failed_result("nosender").await;
    for event in stack.events(&stack.results_queue).await {
        let outcomes = notifier.handle(&event).await.unwrap();
        assert!(
            matches!(&outcomes[..], [NotifyOutcome::NotSent { kind, .. }] if kind == "missing_config"),
            "{outcomes:?}"
        );
    }
    let record: serde_json::Value = stack.json("notifications/nosender.json").await;
    assert_eq!(record["state"], "undeliverable", "{record}");
    assert!(
        record["error"].as_str().unwrap().contains("SENDER_ADDRESS"),
        "{record}"
    );
    assert!(stack.ses_moto.sent_emails().is_empty());
}

/// An SES endpoint that accepts the connection and never answers: the call times out, and
/// whether SES sent the mail is unknown. At most once: the record says `unconfirmed`, the
/// invocation is acknowledged, and no retry sends it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ses_call_that_times_out_is_never_sent_again() {
    let stack = stack(TrainerOptions::default()).await;
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let connections = Arc::new(Mutex::new(Vec::new()));
    let held = Arc::clone(&connections);
    std::thread::spawn(move || {
        for stream in silent.incoming().flatten() {
            held.lock().unwrap().push(stream);
        }
    });
    let notifier = Notifier::new(
        stack_config(INPUT, RESULTS, &[("SENDER_ADDRESS", SENDER.to_owned())]),
        stack.store.clone(),
        Arc::new(SesMailer::with_timeout(
            &aws(&silent_url).await,
            Duration::from_secs(1),
        )),
    );
    stack.put_failed_result("slow").await;
    let events = stack.events(&stack.results_queue).await;
    let outcomes = notifier.handle(&events[0]).await.unwrap();
    assert!(
        matches!(&outcomes[..], [NotifyOutcome::NotSent { kind, .. }] if kind == "email_unconfirmed"),
        "{outcomes:?}"
    );
    let record: serde_json::Value = stack.json("notifications/slow.json").await;
    assert_eq!(record["state"], "unconfirmed", "{record}");
    // Lambda would not retry an acknowledged event, but a duplicate delivery must not resend.
    let again = notifier.handle(&events[0]).await.unwrap();
    assert!(
        matches!(again[..], [NotifyOutcome::AlreadyHandled { .. }]),
        "{again:?}"
    );
    assert_eq!(connections.lock().unwrap().len(), 1, "one SendEmail call");
}

/// A second invocation for a job that one is running (a direct invoke, a duplicate delivery:
/// another request id) extracts nothing and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trainer_per_job_however_it_is_invoked() {
    let stack = stack(TrainerOptions::default()).await;
    stack.upload_dataset("solo").await;
    stack.put(INPUT, "jobs/solo.json", spec("solo")).await;
    let event = TrainerEvent {
        job_id: "solo".into(),
        continuation: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let (first, second) = tokio::join!(
        stack
            .trainer
            .handle_invocation(&event, deadline, "request-a"),
        stack
            .trainer
            .handle_invocation(&event, deadline, "request-b"),
    );
    let mut outcomes = [first.unwrap(), second.unwrap()];
    outcomes.sort_by_key(|o| matches!(o, TrainerOutcome::AlreadyRunning));
    assert!(
        matches!(&outcomes[0], TrainerOutcome::Finished(result) if result.status == JobStatus::Succeeded),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], TrainerOutcome::AlreadyRunning, "{outcomes:?}");
    // Every image was extracted once, into one pack (the job is one chunk) and its index.
    let cached = stack.store.list(RESULTS, "cache/").await.unwrap();
    let indexes: Vec<_> = cached.iter().filter(|o| o.key.ends_with(".json")).collect();
    assert_eq!((cached.len(), indexes.len()), (2, 1), "{cached:?}");
    let index: serde_json::Value = stack.json(&indexes[0].key).await;
    assert_eq!(index["entries"].as_array().unwrap().len(), 9, "{index}");
    // A Lambda retry keeps its request id and may take its own lease back.
    stack
        .put(RESULTS, "checkpoints/again/lease.json", {
            let until = std::time::SystemTime::now() + Duration::from_secs(600);
            let ms = until
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis();
            format!(r#"{{"continuation":0,"holder":"request-c","expires_at_ms":{ms}}}"#)
                .into_bytes()
        })
        .await;
    stack.upload_dataset("again").await;
    stack.put(INPUT, "jobs/again.json", spec("again")).await;
    let again = TrainerEvent {
        job_id: "again".into(),
        continuation: 0,
    };
    let other = stack
        .trainer
        .handle_invocation(&again, deadline, "request-d")
        .await
        .unwrap();
    assert_eq!(other, TrainerOutcome::AlreadyRunning);
    let retry = stack
        .trainer
        .handle_invocation(&again, deadline, "request-c")
        .await
        .unwrap();
    assert!(matches!(retry, TrainerOutcome::Finished(_)), "{retry:?}");
}

/// What Lambda sends the on-failure destination when it gives up on the trainer, and on the
/// upload trigger: the failure recorder writes the job's failed result (so exactly one email)
/// and the image's error prediction, once however often the record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_lambda_gives_up_on_still_reaches_the_owner_once() {
    let stack = stack(TrainerOptions::default()).await;
    stack.put(INPUT, "jobs/lost.json", spec("lost")).await;
    stack
        .put(INPUT, "images/lost.jpg", fixture("chelsea.jpg"))
        .await;
    let image_event = stack.events(&stack.input_queue).await.pop().unwrap();
    let recorder = FailureRecorder::new(stack_config(INPUT, RESULTS, &[]), stack.store.clone());
    let given_up = |payload: serde_json::Value, function: &str| {
        serde_json::from_value::<InvocationRecord>(serde_json::json!({
            "version": "1.0",
            "timestamp": "2026-12-05T10:00:00.000Z",
            "requestContext": {
                "requestId": "5f9e0c2e-1111-4c3b-9a51-0123456789ab",
                "functionArn": format!("arn:aws:lambda:us-east-1:123456789012:function:{function}:$LATEST"),
                "condition": "RetriesExhausted",
                "approximateInvokeCount": 3
            },
            "requestPayload": payload,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "responsePayload": {"errorType": "S3", "errorMessage": "S3 GetObject on s3://lv-input/datasets/lost/cat/a.jpg failed: SlowDown: Please reduce your request rate."}
        }))
        .unwrap()
    };
    let trainer_record = given_up(
        serde_json::json!({"job_id": "lost", "continuation": 2}),
        "lambda-vision-trainer",
    );
    let image_record = given_up(
        serde_json::to_value(&image_event).unwrap(),
        "lambda-vision-upload-trigger",
    );
    for _ in 0..2 {
        recorder.handle(&trainer_record).await.unwrap();
        recorder.handle(&image_record).await.unwrap();
    }
    let result: JobResult = stack.json("results/lost.json").await;
    assert_eq!(result.status, JobStatus::Failed);
    assert_eq!(result.notify, ["owner@example.com"]);
    assert_eq!(result.continuations, 2);
    let error = result.error.unwrap();
    assert_eq!(error.kind, "retries_exhausted");
    assert!(
        error
            .message
            .contains("lambda-vision-trainer gave up after 3 attempt(s)")
            && error.message.contains("SlowDown"),
        "{}",
        error.message
    );
    let image: PredictionDocument = stack.json("predictions/lost.jpg.json").await;
    assert_eq!(image.error.unwrap().kind, "retries_exhausted");
    assert_eq!(image.source_etag, image_event.records[0].s3.object.e_tag);
    // The result's event reaches the notifier as usual: one email, however often.
    let events = stack.events(&stack.results_queue).await;
    assert_eq!(events.len(), 1, "the second record wrote nothing");
    for _ in 0..2 {
        stack.notifier.handle(&events[0]).await.unwrap();
    }
    let emails = stack.ses_moto.sent_emails();
    assert_eq!(emails.len(), 1);
    assert!(
        emails[0].to_string().contains("lost failed"),
        "{}",
        emails[0]
    );
}
