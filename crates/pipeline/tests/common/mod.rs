//! Setup shared by the pipeline's integration tests: the vision crate's image fixtures and
//! dataset, the stack's buckets and settings, a launcher that must never be needed, and a
//! `local-s3` server in a scratch folder with all of that.

// Each test binary compiles its own copy of this module and uses only part of it.
#![allow(dead_code, unused_imports)]

#[path = "../../../vision/tests/support/fixtures.rs"]
mod fixtures;
pub mod stack;

use aws_config::retry::RetryConfig;
use local_s3::LocalS3;
use pipeline::{Config, S3Store, TrainerLauncher};

pub use fixtures::{BROKEN_JPEG, dataset_files, dataset_objects, fixture};

pub const INPUT: &str = "input";
pub const RESULTS: &str = "results";

/// For jobs given deadlines long enough to finish in one invocation: a hand-over is a failure.
pub struct NoLauncher;

#[async_trait::async_trait]
impl TrainerLauncher for NoLauncher {
    async fn start(&self, job_id: &str, _: u32) -> pipeline::Result<()> {
        panic!("{job_id} should not need a continuation");
    }
}

/// Uploads the two-label dataset (broken JPEG included) to [`INPUT`], and the dataset's job
/// spec.
pub async fn upload_dataset(store: &S3Store, dataset: &str) {
    for (key, bytes) in dataset_objects(dataset) {
        store.put(INPUT, &key, bytes, "image/jpeg").await.unwrap();
    }
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

/// Creates the stack's two buckets on the server behind `store`.
pub async fn create_buckets(store: &S3Store, buckets: [&str; 2]) {
    for bucket in buckets {
        store
            .client()
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
    }
}

/// The pipeline's settings for the buckets `input` and `results`, plus `extra` variables. The
/// model pointer is read for every image unless `extra` says otherwise: these tests train a
/// model and classify with it at once, in one container.
pub fn stack_config(input: &str, results: &str, extra: &[(&str, String)]) -> Config {
    Config::from_lookup(|name| {
        let given = extra
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone());
        match name {
            "INPUT_BUCKET" => Some(input.to_owned()),
            "RESULTS_BUCKET" => Some(results.to_owned()),
            "MODEL_CACHE_SECONDS" => given.or(Some("0".to_owned())),
            _ => given,
        }
    })
    .unwrap()
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
        create_buckets(&store, [INPUT, RESULTS]).await;
        let config = stack_config(INPUT, RESULTS, &[]);
        LocalStack {
            server,
            store,
            config,
            _scratch: scratch,
        }
    }
}

/// A job spec for `dataset` that trains quickly on the small test datasets, notifying
/// owner@example.com.
pub fn job_spec(dataset: &str) -> Vec<u8> {
    serde_json::json!({
        "dataset": dataset, "notify": ["owner@example.com"], "min_images_per_class": 2,
        "validation_split": 0.25, "seed": 3
    })
    .to_string()
    .into_bytes()
}
