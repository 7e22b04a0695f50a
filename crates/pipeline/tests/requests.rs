//! What classifying an image costs in S3 requests, counted by the S3 server itself: two in the
//! common case (the image GET and the prediction PUT; the model's pointer is read once per
//! `MODEL_CACHE_SECONDS`), and no idempotency guarantee lost for it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{INPUT, LocalStack, NoLauncher, RESULTS, fixture, stack_config};
use pipeline::documents::PredictionDocument;
use pipeline::event::object_created_event;
use pipeline::handlers::RecordOutcome;
use pipeline::{S3Event, UploadTrigger};

const IMAGES: [&str; 4] = [
    "chelsea.jpg",
    "coffee.jpg",
    "astronaut.jpg",
    "chelsea_256.png",
];

async fn upload_event(stack: &LocalStack, key: &str, bytes: Vec<u8>, sequencer: u64) -> S3Event {
    let size = bytes.len() as u64;
    let etag = stack
        .store
        .put(INPUT, key, bytes, "image/jpeg")
        .await
        .unwrap()
        .unwrap();
    serde_json::from_value(object_created_event(
        "us-east-1",
        INPUT,
        key,
        size,
        &etag,
        sequencer,
    ))
    .unwrap()
}

fn total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_uploads_costs_two_requests_per_image() {
    let stack = LocalStack::start().await;
    let config = stack_config(INPUT, RESULTS, &[("MODEL_CACHE_SECONDS", "30".to_owned())]);
    let trigger = UploadTrigger::new(
        config,
        stack.store.clone(),
        Arc::new(NoLauncher),
        Arc::new(vision::Backbone::bundled().unwrap()),
    );
    let mut events = Vec::new();
    for (sequencer, name) in IMAGES.iter().enumerate() {
        let key = format!("images/burst/{name}");
        events.push(upload_event(&stack, &key, fixture(name), sequencer as u64).await);
    }
    stack.server.take_request_counts();
    for event in &events {
        let outcomes = trigger.handle(event).await.unwrap();
        assert!(
            matches!(outcomes[..], [RecordOutcome::Predicted { .. }]),
            "{outcomes:?}"
        );
    }
    let counts = stack.server.take_request_counts();
    let images = IMAGES.len() as u64;
    // Per image: GetObject (the image) and PutObject (the prediction); once: the pointer.
    assert_eq!(counts.get("PutObject"), Some(&images), "{counts:?}");
    assert_eq!(counts.get("GetObject"), Some(&(images + 1)), "{counts:?}");
    assert_eq!(total(&counts), 2 * images + 1, "{counts:?}");

    // A duplicate event still writes nothing: its PUT finds this version's prediction.
    let before = stack
        .store
        .get(RESULTS, "predictions/burst/chelsea.jpg.json")
        .await
        .unwrap();
    let again = trigger.handle(&events[0]).await.unwrap();
    assert!(
        matches!(again[..], [RecordOutcome::AlreadyPredicted { .. }]),
        "{again:?}"
    );
    let after = stack
        .store
        .get(RESULTS, "predictions/burst/chelsea.jpg.json")
        .await
        .unwrap();
    assert_eq!((before.etag, before.bytes), (after.etag, after.bytes));

    // A new version of an image replaces its prediction: its PUT finds the old version's.
    let newer = upload_event(&stack, "images/burst/chelsea.jpg", fixture("coffee.jpg"), 9).await;
    stack.server.take_request_counts();
    let outcomes = trigger.handle(&newer).await.unwrap();
    assert!(
        matches!(outcomes[..], [RecordOutcome::Predicted { .. }]),
        "{outcomes:?}"
    );
    let counts = stack.server.take_request_counts();
    assert_eq!(
        total(&counts),
        4,
        "GET image, PUT refused, GET old prediction, PUT: {counts:?}"
    );
    let replaced: PredictionDocument = serde_json::from_slice(
        &stack
            .store
            .get(RESULTS, "predictions/burst/chelsea.jpg.json")
            .await
            .unwrap()
            .bytes,
    )
    .unwrap();
    assert_eq!(
        replaced.source_etag, newer.records[0].s3.object.e_tag,
        "the prediction is the new version's"
    );
}

/// With the pointer read for every image (`MODEL_CACHE_SECONDS=0`), as before the cache: three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_cache_the_pointer_is_read_for_every_image() {
    let stack = LocalStack::start().await;
    let trigger = UploadTrigger::new(
        stack.config.clone(),
        stack.store.clone(),
        Arc::new(NoLauncher),
        Arc::new(vision::Backbone::bundled().unwrap()),
    );
    let event = upload_event(&stack, "images/one.jpg", fixture("chelsea.jpg"), 1).await;
    stack.server.take_request_counts();
    trigger.handle(&event).await.unwrap();
    let counts = stack.server.take_request_counts();
    assert_eq!(total(&counts), 3, "{counts:?}");
}
