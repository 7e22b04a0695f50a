//! Load: one upload-trigger container handling 1,000 image events back to back keeps its heap
//! flat, and a 5,000-image dataset trains with heap growth of the order of its features only.
//! Its own test binary, so the allocation counter sees only this work. Throughput is printed,
//! not asserted (timings belong in benchmarks).

mod common;
#[path = "../../vision/tests/support/peak_heap.rs"]
mod peak_heap;

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{INPUT, LocalStack, NoLauncher};
use futures::StreamExt;
use peak_heap::{CURRENT, PEAK};
use pipeline::documents::JobStatus;
use pipeline::event::object_created_event;
use pipeline::handlers::RecordOutcome;
use pipeline::{S3Event, Trainer, TrainerEvent, TrainerOptions, TrainerOutcome, UploadTrigger};

#[global_allocator]
static ALLOCATOR: peak_heap::PeakCounter = peak_heap::PeakCounter;

const MIB: f64 = 1024.0 * 1024.0;

/// A distinct 96×72 JPEG per `seed` (different bytes, so a different ETag each).
fn image(seed: u32, label: u32) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(96, 72, |x, y| {
        let stripe = ((x + y * label) / 8) % 2;
        image::Rgb([
            (x * 2 + seed) as u8,
            (y * 3 + seed / 256) as u8,
            if stripe == 0 { 40 } else { 220 },
        ])
    });
    let mut bytes = Cursor::new(Vec::new());
    pixels
        .write_to(&mut bytes, image::ImageFormat::Jpeg)
        .unwrap();
    bytes.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_keep_the_heap_flat_and_five_thousand_images_train() {
    // `stack` keeps the scratch folder until the test ends.
    let stack = LocalStack::start().await;
    let (server, store, config) = (stack.server, stack.store, stack.config);
    let backbone = Arc::new(vision::Backbone::bundled().unwrap());
    let trigger = UploadTrigger::new(
        config.clone(),
        store.clone(),
        Arc::new(NoLauncher),
        backbone.clone(),
    );

    // 1,000 image events, one at a time, as one warm container receives them.
    const EVENTS: u32 = 1_000;
    let mut heap_after = Vec::new();
    let mut started = Instant::now();
    let mut rates = Vec::new();
    for n in 0..EVENTS {
        let key = format!("images/load/{n:04}.jpg");
        let bytes = image(n, 1);
        let etag = store
            .put(INPUT, &key, bytes.clone(), "image/jpeg")
            .await
            .unwrap()
            .unwrap();
        let event = object_created_event(
            "us-east-1",
            INPUT,
            &key,
            bytes.len() as u64,
            &etag,
            u64::from(n),
        );
        let outcomes = trigger
            .handle(&serde_json::from_value::<S3Event>(event).unwrap())
            .await
            .unwrap();
        assert!(
            matches!(outcomes[..], [RecordOutcome::Predicted { .. }]),
            "{key}: {outcomes:?}"
        );
        if (n + 1) % 100 == 0 {
            heap_after.push(CURRENT.load(Ordering::SeqCst));
            rates.push(100.0 / started.elapsed().as_secs_f64());
            started = Instant::now();
        }
    }
    let growth = heap_after[heap_after.len() - 1] as f64 - heap_after[0] as f64;
    eprintln!(
        "1,000 events: heap after 100 = {:.1} MiB, after 1,000 = {:.1} MiB (growth {:.2} MiB); images/s per 100: {:?}",
        heap_after[0] as f64 / MIB,
        heap_after[heap_after.len() - 1] as f64 / MIB,
        growth / MIB,
        rates
            .iter()
            .map(|r| (r * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    assert!(
        growth < 4.0 * MIB,
        "the heap grew by {:.1} MiB over 900 events",
        growth / MIB
    );

    // A 5,000-image dataset (10 labels), uploaded 16 at a time.
    const IMAGES: u32 = 5_000;
    futures::stream::iter(0..IMAGES)
        .map(|n| {
            let store = store.clone();
            async move {
                let label = n % 10;
                let key = format!("datasets/big/l{label}/{n:05}.jpg");
                store
                    .put(INPUT, &key, image(n, label + 2), "image/jpeg")
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let spec = serde_json::json!({"dataset": "big", "penalties": [0.01]});
    store
        .put(
            INPUT,
            "jobs/big.json",
            spec.to_string().into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
    let trainer = Trainer::new(
        config,
        store.clone(),
        Arc::new(NoLauncher),
        backbone,
        TrainerOptions::default(),
    );
    let baseline = CURRENT.load(Ordering::SeqCst);
    PEAK.store(baseline, Ordering::SeqCst);
    let training_started = Instant::now();
    let event = TrainerEvent {
        job_id: "big".to_owned(),
        continuation: 0,
    };
    let TrainerOutcome::Finished(result) = trainer
        .handle(&event, Instant::now() + Duration::from_secs(3600))
        .await
        .unwrap()
    else {
        panic!("the job did not finish");
    };
    let peak_growth = (PEAK.load(Ordering::SeqCst) - baseline) as f64;
    assert_eq!(result.status, JobStatus::Succeeded, "{result:?}");
    let summary = result.summary.unwrap();
    assert_eq!(
        summary.images_train + summary.images_validation,
        IMAGES as usize
    );
    let features = f64::from(IMAGES) * 1280.0 * 4.0;
    eprintln!(
        "5,000-image job: {:.1} s, peak heap growth {:.1} MiB = {:.2} × the features ({:.1} MiB)",
        training_started.elapsed().as_secs_f64(),
        peak_growth / MIB,
        peak_growth / features,
        features / MIB
    );
    // The feature set holds the features once, and the penalty search a standardised copy of
    // the training rows (at most 10,000, so here 4,000 of the 5,000); everything else is
    // bounded by a chunk of images.
    assert!(
        peak_growth < 2.0 * features + 32.0 * MIB,
        "peak heap growth {:.1} MiB for {:.1} MiB of features",
        peak_growth / MIB,
        features / MIB
    );
    drop(server);
}
