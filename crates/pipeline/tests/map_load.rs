//! Load: the state machine's `prepare` and `train` steps on a 20,000-image dataset (set
//! `LV_MAP_LOAD_IMAGES` for another size; docs/performance.md has a 50,000-image run), counting
//! the S3 requests (by the S3 server itself) and the heap. The features are synthetic (the
//! packs are written here, in the cache's format, as the Map's children would write them), so
//! the test measures listing, sharding, pack reads and training, not extraction. Figures are
//! printed; the bounds asserted are what makes the path scale: requests per 1,000 keys and per
//! pack, never per image, and a heap of the features held once plus a bounded search copy.

mod common;
#[path = "../../vision/tests/support/peak_heap.rs"]
mod peak_heap;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{INPUT, LocalStack, NoLauncher, RESULTS, stack_config};
use futures::StreamExt;
use peak_heap::{CURRENT, PEAK};
use pipeline::documents::{JobResult, JobStatus};
use pipeline::{MapStep, S3Store, Trainer, TrainerOptions};

#[global_allocator]
static ALLOCATOR: peak_heap::PeakCounter = peak_heap::PeakCounter;

const MIB: f64 = 1024.0 * 1024.0;
const SHARD: usize = 500;
const FEATURE_LEN: usize = 1280;

fn images() -> usize {
    std::env::var("LV_MAP_LOAD_IMAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

fn requests(counts: &BTreeMap<String, u64>, operation: &str) -> u64 {
    counts.get(operation).copied().unwrap_or(0)
}

/// Measures `work`'s peak heap growth in bytes.
async fn peak_growth<T>(work: impl std::future::Future<Output = T>) -> (T, f64) {
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let output = work.await;
    (output, PEAK.load(Ordering::SeqCst) as f64 - before as f64)
}

/// Writes one pack and its index for `shard`'s images as an `extract` step would: features
/// that tell the two labels apart (label-dependent with a little per-image variation).
async fn write_pack(store: &S3Store, shard: &serde_json::Value, cache_prefix: &str, n: usize) {
    let images = shard["images"].as_array().unwrap();
    let mut pack = b"LVP1".to_vec();
    pack.extend_from_slice(&(images.len() as u32).to_le_bytes());
    let mut entries = Vec::new();
    for (i, image) in images.iter().enumerate() {
        let label = image["label"].as_str().unwrap();
        let sign = if label == "a" { 1.0f32 } else { -1.0 };
        for f in 0..FEATURE_LEN {
            let value = sign * ((f % 7) as f32) + ((i * 31 + f) % 13) as f32 * 0.01;
            pack.extend_from_slice(&value.to_le_bytes());
        }
        entries.push(serde_json::json!({ "etag": image["etag"] }));
    }
    let pack_key = format!("{cache_prefix}packs/{n:032x}.lvp");
    store
        .put(RESULTS, &pack_key, pack, "application/octet-stream")
        .await
        .unwrap();
    let index = serde_json::json!({ "pack": pack_key, "entries": entries });
    store
        .put(
            RESULTS,
            &format!("{cache_prefix}packs/{n:032x}.json"),
            index.to_string().into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_dataset_prepares_and_trains_in_requests_per_page_and_pack() {
    let image_count = images();
    let stack = LocalStack::start().await;
    let (server, store) = (&stack.server, &stack.store);
    let backbone = Arc::new(vision::Backbone::bundled().unwrap());
    let trainer = Trainer::new(
        stack_config(INPUT, RESULTS, &[("MAP_SHARD_IMAGES", SHARD.to_string())]),
        store.clone(),
        Arc::new(NoLauncher),
        backbone.clone(),
        TrainerOptions::default(),
    );

    // Tiny objects (their content is never read: every image is "cached" below).
    let uploaded = Instant::now();
    let puts: Vec<_> = futures::stream::iter(0..image_count)
        .map(|n| {
            let label = if n % 2 == 0 { "a" } else { "b" };
            let key = format!("datasets/big/{label}/{n:06}.jpg");
            async move {
                store
                    .put(INPUT, &key, n.to_le_bytes().to_vec(), "image/jpeg")
                    .await
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(puts.iter().all(Result::is_ok));
    let spec = serde_json::json!({"dataset": "big", "validation_split": 0.2, "seed": 1});
    store
        .put(
            INPUT,
            "jobs/big.json",
            spec.to_string().into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
    eprintln!(
        "uploaded {image_count} objects in {:.1} s",
        uploaded.elapsed().as_secs_f64()
    );
    server.take_request_counts();

    // Prepare: nothing cached yet, so 100 shards.
    let started = Instant::now();
    let (prepared, prepare_heap) = peak_growth(trainer.handle_step(
        &MapStep::Prepare {
            job_id: "big".to_owned(),
        },
        deadline(),
    ))
    .await;
    let prepared = serde_json::to_value(prepared.unwrap()).unwrap();
    // HeadObject is this server's gap, not the code's: s3s-fs lists no ETags, so the store
    // asks for each (`S3Store::list`); S3 lists them, so on AWS these requests do not happen.
    let counts = server.take_request_counts();
    eprintln!(
        "prepare: {:.1} s, peak heap growth {:.1} MiB, requests {counts:?}",
        started.elapsed().as_secs_f64(),
        prepare_heap / MIB
    );
    assert_eq!(prepared["shards"], image_count / SHARD, "{prepared}");
    let pages = (image_count as u64).div_ceil(1_000);
    assert_eq!(
        requests(&counts, "ListObjectsV2"),
        pages + 1,
        "one LIST per 1,000 dataset keys and one of the (empty) cache: {counts:?}"
    );
    assert_eq!(
        requests(&counts, "PutObject"),
        (image_count / SHARD) as u64 + 2,
        "one PUT per shard, the manifest and the checkpoint: {counts:?}"
    );
    assert!(requests(&counts, "GetObject") <= 4, "{counts:?}");
    assert!(
        prepare_heap < 64.0 * MIB,
        "prepare holds the listing, not the images: {:.1} MiB",
        prepare_heap / MIB
    );

    // The Map's children, simulated: one pack per shard.
    let cache_prefix = format!("cache/{}/224/big/", backbone.sha256());
    for n in 0..image_count / SHARD {
        let key = format!("checkpoints/big/shards/{n:05}.json");
        let shard: serde_json::Value =
            serde_json::from_slice(&store.get(RESULTS, &key).await.unwrap().bytes).unwrap();
        write_pack(store, &shard, &cache_prefix, n).await;
    }
    server.take_request_counts();

    // Train: reads 100 indexes and 100 packs, not 50,000 objects.
    let started = Instant::now();
    let (trained, train_heap) = peak_growth(trainer.handle_step(
        &MapStep::Train {
            job_id: "big".to_owned(),
        },
        deadline(),
    ))
    .await;
    let trained = serde_json::to_value(trained.unwrap()).unwrap();
    let counts = server.take_request_counts();
    let features = (image_count * FEATURE_LEN * 4) as f64;
    eprintln!(
        "train: {:.1} s, peak heap growth {:.1} MiB = {:.2} × the features ({:.1} MiB), requests {counts:?}",
        started.elapsed().as_secs_f64(),
        train_heap / MIB,
        train_heap / features,
        features / MIB
    );
    assert_eq!(trained["status"], "succeeded", "{trained}");
    let packs = (image_count / SHARD) as u64;
    assert!(
        requests(&counts, "GetObject") <= 2 * packs + 10,
        "one GET per pack and per index, plus a few documents: {counts:?}"
    );
    assert!(
        requests(&counts, "ListObjectsV2") <= pages + 2,
        "the dataset's pages and the cache's: {counts:?}"
    );
    // The features are held once; the penalty search's standardised copy is at most 10,000
    // rows (49 MiB) whatever the size, and keys and labels add a few hundred bytes per image.
    assert!(
        train_heap < 1.3 * features + 64.0 * MIB,
        "peak heap growth {:.1} MiB for {:.1} MiB of features",
        train_heap / MIB,
        features / MIB
    );
    let result: JobResult =
        serde_json::from_slice(&store.get(RESULTS, "results/big.json").await.unwrap().bytes)
            .unwrap();
    assert_eq!(result.status, JobStatus::Succeeded);
    let summary = result.summary.unwrap();
    assert_eq!(
        summary.images_train + summary.images_validation,
        image_count
    );
    let metrics: vision::Metrics = serde_json::from_slice(
        &store
            .get(RESULTS, "models/big/metrics.json")
            .await
            .unwrap()
            .bytes,
    )
    .unwrap();
    eprintln!(
        "of which head training: {:.1} s (penalty search on at most 10,000 rows, then the fits)",
        metrics.timings.head_training_ms / 1000.0
    );
}
