//! S3 goes away in the middle of a training job and comes back: the invocation fails (so
//! Lambda retries it), the retry resumes from the feature cache, and the job ends with the same
//! model as an uninterrupted run, every image counted once. The S3 here is `local-s3`, which
//! keeps objects as files and so survives its own restart on the same port.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{LocalStack, NoLauncher, RESULTS, upload_dataset};
use local_s3::LocalS3;
use pipeline::documents::JobStatus;
use pipeline::{
    ProgressObserver, Trainer, TrainerEvent, TrainerOptions, TrainerOutcome, TrainingProgress,
};

fn event(job_id: &str) -> TrainerEvent {
    TrainerEvent {
        job_id: job_id.to_owned(),
        continuation: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_survives_an_s3_outage_and_counts_every_image_once() {
    // Fail fast once S3 is gone; Lambda's retry is the test's second `handle`. `stack` keeps
    // the scratch folder until the test ends.
    let stack = LocalStack::start_with_max_attempts(2).await;
    let (server, store, config) = (stack.server, stack.store, stack.config);
    let root = server.root.clone();
    let port = server.port;
    upload_dataset(&store, "steady").await;
    upload_dataset(&store, "outage").await;
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
