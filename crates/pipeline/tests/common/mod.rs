//! Setup shared by the pipeline's integration tests: the vision crate's image fixtures, and a
//! `local-s3` server in a scratch folder with the input and results buckets, the pipeline's
//! settings for them and a launcher that must never be needed.

// Each test binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use aws_config::retry::RetryConfig;
use local_s3::LocalS3;
use pipeline::{Config, S3Store, TrainerLauncher};

pub const INPUT: &str = "input";
pub const RESULTS: &str = "results";

/// A file of `crates/vision/tests/data`, the one set of test images.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../vision/tests/data")
            .join(name),
    )
    .unwrap()
}

/// For jobs given deadlines long enough to finish in one invocation: a hand-over is a failure.
pub struct NoLauncher;

#[async_trait::async_trait]
impl TrainerLauncher for NoLauncher {
    async fn start(&self, job_id: &str, _: u32) -> pipeline::Result<()> {
        panic!("{job_id} should not need a continuation");
    }
}

/// A small two-class dataset: `(label, fixture)`, odd formats and orientations included.
pub const DATASET_FILES: [(&str, &str); 8] = [
    ("cat", "chelsea.jpg"),
    ("cat", "chelsea_exif6.jpg"),
    ("cat", "chelsea_cmyk.jpg"),
    ("cat", "chelsea_palette.png"),
    ("cat", "chelsea_256.png"),
    ("coffee", "coffee.jpg"),
    ("coffee", "coffee_progressive.jpg"),
    ("coffee", "astronaut.jpg"),
];

/// Uploaded beside [`DATASET_FILES`] as `coffee/broken.jpg`: a JPEG header and nothing more.
pub const BROKEN_JPEG: &[u8] = b"\xff\xd8\xff\xe0 not really";

/// Uploads [`DATASET_FILES`] and [`BROKEN_JPEG`] to [`INPUT`], and the dataset's job spec.
pub async fn upload_dataset(store: &S3Store, dataset: &str) {
    for (label, name) in DATASET_FILES {
        let key = format!("datasets/{dataset}/{label}/{name}");
        store
            .put(INPUT, &key, fixture(name), "image/jpeg")
            .await
            .unwrap();
    }
    let key = format!("datasets/{dataset}/coffee/broken.jpg");
    store
        .put(INPUT, &key, BROKEN_JPEG.to_vec(), "image/jpeg")
        .await
        .unwrap();
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

/// A `local-s3` server over a scratch folder, with [`INPUT`] and [`RESULTS`] created.
pub struct LocalStack {
    /// First, so it stops before the scratch folder goes. Its `root` is the folder it serves
    /// and its `port` the one to restart it on.
    pub server: LocalS3,
    pub store: S3Store,
    /// The pipeline's settings for these buckets.
    pub config: Config,
    /// Deleted with the stack; a test that moves fields out still holds this until its end.
    _scratch: tempfile::TempDir,
}

impl LocalStack {
    /// With the SDK's default retries.
    pub async fn start() -> LocalStack {
        Self::start_with(None).await
    }

    /// With at most `max_attempts` per SDK request, so requests fail fast once S3 is gone.
    pub async fn start_with_max_attempts(max_attempts: u32) -> LocalStack {
        let retry = RetryConfig::standard().with_max_attempts(max_attempts);
        Self::start_with(Some(retry)).await
    }

    async fn start_with(retry: Option<RetryConfig>) -> LocalStack {
        let scratch = tempfile::tempdir().unwrap();
        let server = LocalS3::start(&scratch.path().join("s3")).await.unwrap();
        let mut loader = server.sdk_config_builder();
        if let Some(retry) = retry {
            loader = loader.retry_config(retry);
        }
        let store = S3Store::new(&loader.load().await);
        for bucket in [INPUT, RESULTS] {
            store
                .client()
                .create_bucket()
                .bucket(bucket)
                .send()
                .await
                .unwrap();
        }
        let config = Config::from_lookup(|name| match name {
            "INPUT_BUCKET" => Some(INPUT.to_owned()),
            "RESULTS_BUCKET" => Some(RESULTS.to_owned()),
            _ => None,
        })
        .unwrap();
        LocalStack {
            server,
            store,
            config,
            _scratch: scratch,
        }
    }
}
