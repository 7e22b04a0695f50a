//! S3 goes away in the middle of a training job and comes back: the invocation fails (so
//! Lambda retries it), the retry resumes from the feature cache, and the job ends with the same
//! model as an uninterrupted run, every image counted once. The S3 here is `local-s3`, which
//! keeps objects as files and so survives its own restart on the same port.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use local_s3::LocalS3;
use pipeline::job::JobStatus;
use pipeline::{
    Config, ProgressObserver, S3Store, Trainer, TrainerEvent, TrainerLauncher, TrainerOptions,
    TrainerOutcome, TrainingProgress,
};

const INPUT: &str = "input";
const RESULTS: &str = "results";

struct NoLauncher;

#[async_trait::async_trait]
impl TrainerLauncher for NoLauncher {
    async fn start(&self, job_id: &str, _: u32) -> pipeline::Result<()> {
        panic!("{job_id} should not need a continuation");
    }
}

async fn aws(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            local_s3::ACCESS_KEY,
            local_s3::SECRET_KEY,
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint)
        // Fail fast once S3 is gone; Lambda's retry is the test's second `handle`.
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../vision/tests/data")
            .join(name),
    )
    .unwrap()
}

async fn upload_dataset(store: &S3Store, dataset: &str) {
    let files = [
        ("cat", "chelsea.jpg"),
        ("cat", "chelsea_exif6.jpg"),
        ("cat", "chelsea_cmyk.jpg"),
        ("cat", "chelsea_palette.png"),
        ("cat", "chelsea_256.png"),
        ("coffee", "coffee.jpg"),
        ("coffee", "coffee_progressive.jpg"),
        ("coffee", "astronaut.jpg"),
    ];
    for (label, name) in files {
        let key = format!("datasets/{dataset}/{label}/{name}");
        store
            .put(INPUT, &key, fixture(name), "image/jpeg")
            .await
            .unwrap();
    }
    let key = format!("datasets/{dataset}/coffee/broken.jpg");
    let broken = b"\xff\xd8\xff\xe0 not really".to_vec();
    store.put(INPUT, &key, broken, "image/jpeg").await.unwrap();
    let spec = serde_json::json!({
        "dataset": dataset, "min_images_per_class": 2, "validation_split": 0.25, "seed": 3
    });
    let key = format!("jobs/{dataset}.json");
    store
        .put(
            INPUT,
            &key,
            spec.to_string().into_bytes(),
            "application/json",
        )
        .await
        .unwrap();
}

fn event(job_id: &str) -> TrainerEvent {
    TrainerEvent {
        job_id: job_id.to_owned(),
        continuation: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_an_s3_outage_and_counts_every_image_once() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("s3");
    let server = LocalS3::start(&root).await.unwrap();
    let port = server.port;
    let aws = aws(&server.endpoint).await;
    let store = S3Store::new(&aws);
    for bucket in [INPUT, RESULTS] {
        store
            .client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
    }
    upload_dataset(&store, "steady").await;
    upload_dataset(&store, "outage").await;
    let config = Config::from_lookup(|name| match name {
        "INPUT_BUCKET" => Some(INPUT.to_owned()),
        "RESULTS_BUCKET" => Some(RESULTS.to_owned()),
        _ => None,
    })
    .unwrap();
    let backbone = Arc::new(vision::Backbone::bundled().unwrap());
    let deadline = || Instant::now() + Duration::from_secs(600);
    let options = TrainerOptions {
        chunk_size: 3,
        ..TrainerOptions::default()
    };

    let steady = Trainer::new(
        config.clone(),
        store.clone(),
        Arc::new(NoLauncher),
        backbone.clone(),
        options.clone(),
    );
    let TrainerOutcome::Finished(steady_result) =
        steady.handle(&event("steady"), deadline()).await.unwrap()
    else {
        panic!("the uninterrupted job did not finish");
    };

    // S3 stops once the second chunk is under way (the first chunk's features are cached).
    let (stop_sender, stop_receiver) = std::sync::mpsc::channel::<()>();
    let stop_sender = Mutex::new(stop_sender);
    let signalled = Arc::new(AtomicBool::new(false));
    let observer = {
        let signalled = signalled.clone();
        ProgressObserver(Arc::new(move |progress| {
            if let TrainingProgress::ImageExtracted { done, .. } = progress
                && done >= 4
                && !signalled.swap(true, Ordering::SeqCst)
            {
                let _ = stop_sender.lock().unwrap().send(());
            }
        }))
    };
    let stopper = tokio::spawn(async move {
        let _ = tokio::task::spawn_blocking(move || stop_receiver.recv()).await;
        server.stop();
    });
    let interrupted = Trainer::new(
        config,
        store.clone(),
        Arc::new(NoLauncher),
        backbone,
        TrainerOptions {
            progress: Some(observer),
            ..options
        },
    );
    let error = interrupted
        .handle(&event("outage"), deadline())
        .await
        .expect_err("the invocation must fail while S3 is down");
    assert!(error.is_transient(), "Lambda must retry: {error}");
    stopper.await.unwrap();
    let cached_before_restart = std::fs::read_dir(root.join(RESULTS).join("cache"))
        .map(|_| ())
        .is_ok();
    assert!(
        cached_before_restart,
        "the first chunk was cached before the outage"
    );

    // S3 comes back on the same port; Lambda's retry resumes the job.
    let _server = LocalS3::start_on(&root, port).await.unwrap();
    let TrainerOutcome::Finished(result) = interrupted
        .handle(&event("outage"), deadline())
        .await
        .unwrap()
    else {
        panic!("the retried job did not finish");
    };
    assert_eq!(result.status, JobStatus::Succeeded, "{result:?}");
    let (a, b) = (steady_result.summary.unwrap(), result.summary.unwrap());
    assert_eq!(
        b.images_train + b.images_validation + b.images_skipped,
        9,
        "each image once"
    );
    assert_eq!(
        (a.images_train, a.images_validation, a.images_skipped),
        (b.images_train, b.images_validation, b.images_skipped)
    );
    assert_eq!(a.validation_accuracy, b.validation_accuracy);
    let head = |job: &str| {
        let path = root.join(RESULTS).join(format!("models/{job}/head.json"));
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(path).unwrap()).unwrap()
    };
    assert_eq!(
        head("steady")["weights"],
        head("outage")["weights"],
        "same model as without the outage"
    );
}
