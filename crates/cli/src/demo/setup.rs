//! Setting the stage: the work folder, JSON logs, the SDK's settings, the buckets, and the
//! demo's data compiled into the binary.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use include_dir::{Dir, include_dir};
use indicatif::MultiProgress;
use pipeline::S3Store;

use super::DemoArgs;
use super::progress::bar;

/// The demo's data, compiled in so the binary runs from anywhere (see `demo/README.md`).
static DEMO_DATA: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../demo");

/// Marks a folder as the demo's, so a fresh run may clear it.
const MARKER: &str = ".lambda-vision-demo";

/// Uploads `(key, bytes)` pairs to `bucket`, four at a time, with a bar.
pub(super) async fn upload(
    ui: &MultiProgress,
    store: &S3Store,
    bucket: &str,
    files: Vec<(String, Vec<u8>)>,
) -> Result<()> {
    use futures::StreamExt;
    let bar = ui.add(bar(files.len() as u64, "upload"));
    let mut puts = futures::stream::iter(files)
        .map(|(key, bytes)| async move {
            let content_type = content_type(&key);
            store.put(bucket, &key, bytes, content_type).await
        })
        .buffered(4);
    while let Some(result) = puts.next().await {
        result?;
        bar.inc(1);
    }
    bar.finish();
    Ok(())
}

fn content_type(key: &str) -> &'static str {
    match Path::new(key).extension().and_then(|e| e.to_str()) {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("json") => pipeline::store::JSON_CONTENT_TYPE,
        _ => "application/octet-stream",
    }
}

/// The embedded files under `folder`, as `(<prefix><relative path>, bytes)`, sorted by key.
pub(super) fn demo_files(folder: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let dir = DEMO_DATA
        .get_dir(folder)
        .with_context(|| format!("the demo data has no {folder}/ (rebuild lambda-vision)"))?;
    let mut files = Vec::new();
    let mut pending = vec![dir];
    while let Some(dir) = pending.pop() {
        pending.extend(dir.dirs());
        for file in dir.files() {
            let relative = file
                .path()
                .strip_prefix(folder)
                .unwrap_or(file.path())
                .to_string_lossy()
                .replace('\\', "/");
            files.push((format!("{prefix}{relative}"), file.contents().to_vec()));
        }
    }
    files.sort();
    Ok(files)
}

/// A job id unique to this run (UTC time), so a second demo trains and reports again.
pub(super) fn new_job_id() -> String {
    let stamp: String = pipeline::clock::now_rfc3339()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(15)
        .collect();
    format!("demo-{stamp}")
}

/// Creates `dir` (or checks it is the demo's) and, unless `keep`, clears the previous run.
pub(super) fn prepare_workdir(dir: &Path, keep: bool) -> Result<PathBuf> {
    if dir.exists() && !dir.join(MARKER).exists() {
        let empty = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists and was not made by the demo; pick another --workdir",
                dir.display()
            );
        }
    }
    if !keep {
        for name in ["s3", "outbox"] {
            let path = dir.join(name);
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot clear {}", path.display()))?;
            }
        }
        for name in ["logs.jsonl", "metrics.jsonl"] {
            let _ = std::fs::remove_file(dir.join(name));
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    File::create(dir.join(MARKER))?.write_all(b"made by `lambda-vision demo`\n")?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))
}

/// The handlers' logs, as JSON lines like CloudWatch receives them.
pub(super) fn init_logging(path: &Path) -> Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::new(
        "info,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_s3=warn,s3s=warn,s3s_fs=warn,hyper=warn",
    );
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The SDK's settings: local-s3's own when it runs in-process, else [`sdk_config`]'s.
pub(super) async fn aws_config(
    args: &DemoArgs,
    local_server: Option<&local_s3::LocalS3>,
) -> aws_config::SdkConfig {
    match local_server {
        Some(server) => with_retries(server.sdk_config_builder()).load().await,
        None => sdk_config(args.endpoint_url.as_deref()).await,
    }
}

/// The SDK's usual chain (credentials, region, defaulting to us-east-1) with `endpoint` if
/// given. Five attempts, so a slow moment does not fail a command.
pub(crate) async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let region = aws_config::meta::region::RegionProviderChain::default_provider()
        .or_else(aws_config::Region::new("us-east-1"));
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    with_retries(loader).load().await
}

fn with_retries(loader: aws_config::ConfigLoader) -> aws_config::ConfigLoader {
    loader.retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
}

pub(super) async fn ensure_bucket(store: &S3Store, bucket: &str) -> Result<()> {
    let client = store.client();
    if client.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create bucket {bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )
        })?;
    Ok(())
}
