//! `lambda-vision demo`: the whole pipeline on this machine. An S3 server in-process (or any
//! endpoint you name), the demo data uploaded, and every object-created event, shaped as S3
//! sends it and filtered by the template's rules, delivered to the three real handlers —
//! the code the Lambdas run. The report email lands in a file outbox.

mod lambdas;
mod progress;
mod setup;
mod summary;

use std::collections::HashMap;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::MultiProgress;
use pipeline::layout::{self, IMAGES_PREFIX};
use pipeline::{Config, S3Store};
use tokio::sync::mpsc::unbounded_channel;

use lambdas::{Lambdas, Telemetry};
use progress::{TrainingBars, say};
use summary::Summary;

pub(crate) use setup::sdk_config;

/// The dataset name the demo trains on.
const DATASET: &str = "digits";
/// How many images of each digit the main job trains on; the rest of each digit's images are
/// the weaker challenger's dataset, so the serving model has never seen them.
const MAIN_IMAGES_PER_LABEL: usize = 24;
const WEAK_DATASET: &str = "digits-small";

/// Objects to upload: key and bytes.
type Uploads = Vec<(String, Vec<u8>)>;
/// Lambda's own limit on one invocation.
const LAMBDA_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Lambda retries a failed asynchronous invocation twice.
const ATTEMPTS: usize = 3;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Where the demo keeps its buckets (as plain files under `s3/`), the email outbox, the
    /// logs and the metrics.
    #[arg(long, value_name = "DIR", default_value = "lambda-vision-demo")]
    workdir: PathBuf,
    /// Reuse what an earlier demo left in DIR (cached features, predictions) instead of
    /// starting from empty buckets.
    #[arg(long)]
    keep: bool,
    /// Use this S3 endpoint (moto, MinIO, AWS) instead of the in-process server.
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The input bucket (created if missing).
    #[arg(long, value_name = "NAME", default_value = "lambda-vision-demo-input")]
    input_bucket: String,
    /// The results bucket (created if missing).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "lambda-vision-demo-results"
    )]
    results_bucket: String,
    /// Send the report through SES v2 from this verified address instead of writing an .eml.
    #[arg(long, value_name = "ADDRESS")]
    ses_from: Option<String>,
    /// Who the report is addressed to.
    #[arg(long, value_name = "ADDRESS", default_value = "you@example.com")]
    notify: String,
}

pub fn run(args: &DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(demo(args))
}

async fn demo(args: &DemoArgs) -> Result<()> {
    let started = Instant::now();
    let workdir = setup::prepare_workdir(&args.workdir, args.keep)?;
    let logs = workdir.join("logs.jsonl");
    setup::init_logging(&logs)?;
    let metrics = pipeline::observe::install_emf_recorder("demo")
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;

    let local_server = match &args.endpoint_url {
        Some(_) => None,
        None => Some(local_s3::LocalS3::start(&workdir.join("s3")).await?),
    };
    let aws = setup::aws_config(args, local_server.as_ref()).await;
    let (writes_sender, writes) = unbounded_channel();
    let store = S3Store::new(&aws).reporting_writes_to(writes_sender);
    for bucket in [&args.input_bucket, &args.results_bucket] {
        setup::ensure_bucket(&store, bucket).await?;
    }
    let outbox = workdir.join("outbox");
    let config = pipeline_config(args, &outbox)?;

    let ui = MultiProgress::new();
    let bars = TrainingBars::new(ui.clone());
    let telemetry = Telemetry {
        metrics,
        metrics_file: workdir.join("metrics.jsonl"),
    };
    let mut lambdas = Lambdas::start(
        config,
        store.clone(),
        &aws,
        writes,
        bars.observer(),
        telemetry,
        ui.clone(),
    )
    .await?;

    // 1. Photos (classified with the ImageNet classes), the dataset and the job spec.
    let job_id = setup::new_job_id();
    let spec = serde_json::json!({ "dataset": DATASET, "notify": [args.notify] });
    let mut uploads = setup::demo_files("photos", &format!("{IMAGES_PREFIX}photos/"))?;
    uploads.extend(per_label(
        &setup::demo_files("dataset", &layout::dataset_prefix(DATASET))?,
        ..MAIN_IMAGES_PER_LABEL,
    ));
    uploads.push((
        layout::job_spec_key(&job_id),
        serde_json::to_vec_pretty(&spec)?,
    ));
    say(
        &ui,
        format!("demo: s3 endpoint {}", aws.endpoint_url().unwrap_or("AWS")),
    );
    setup::upload(&ui, &store, &args.input_bucket, uploads).await?;
    lambdas.pump().await;

    // 2. A deliberately weaker challenger: two training images per digit. Scored against the
    //    serving model on its held-out images, it is not promoted.
    let (weak_job_id, weak_uploads) = weak_challenger(&job_id, &args.notify)?;
    setup::upload(&ui, &store, &args.input_bucket, weak_uploads).await?;
    lambdas.pump().await;

    // 3. New digits, classified by the serving model.
    let new_images = setup::demo_files("new-images", &format!("{IMAGES_PREFIX}digits/"))?;
    setup::upload(&ui, &store, &args.input_bucket, new_images).await?;
    lambdas.pump().await;
    bars.finish();

    // 4. The registry as `lambda-vision models` shows it: promote the weak model by hand,
    //    then roll back to the one it replaced.
    registry_tour(&store, &args.results_bucket, &weak_job_id).await?;

    let summary = Summary {
        job_id: &job_id,
        weak_job_id: &weak_job_id,
        workdir: &workdir,
        local: local_server.is_some(),
        results_bucket: &args.results_bucket,
        outbox: args.ses_from.is_none().then_some(outbox.as_path()),
    };
    summary.print(&store, started.elapsed()).await?;
    if lambdas.failures > 0 {
        bail!(
            "{} invocation(s) failed after {ATTEMPTS} attempts; see {}",
            lambdas.failures,
            logs.display()
        );
    }
    Ok(())
}

/// The weaker challenger's job id and uploads: its dataset and its job spec.
fn weak_challenger(job_id: &str, notify: &str) -> Result<(String, Uploads)> {
    let weak_job_id = format!("{job_id}-small");
    let weak_spec = serde_json::json!({
        "dataset": WEAK_DATASET,
        "notify": [notify],
        "validation_split": 0.5,
        "min_images_per_class": 2,
    });
    let mut weak_uploads = per_label(
        &setup::demo_files("dataset", &layout::dataset_prefix(WEAK_DATASET))?,
        MAIN_IMAGES_PER_LABEL..,
    );
    weak_uploads.push((
        layout::job_spec_key(&weak_job_id),
        serde_json::to_vec_pretty(&weak_spec)?,
    ));
    Ok((weak_job_id, weak_uploads))
}

/// The files of each label folder of `files` (sorted by key) whose position in their folder
/// is in `positions`.
fn per_label(files: &[(String, Vec<u8>)], positions: impl RangeBounds<usize>) -> Uploads {
    let mut position_in_folder: HashMap<&str, usize> = HashMap::new();
    let mut kept = Uploads::new();
    for (key, bytes) in files {
        let folder = key.rsplit_once('/').map_or("", |(folder, _)| folder);
        let position = position_in_folder.entry(folder).or_default();
        if positions.contains(position) {
            kept.push((key.clone(), bytes.clone()));
        }
        *position += 1;
    }
    kept
}

/// `models list`, `models promote <weak>`, `models rollback`, `models list`, as the CLI runs
/// them.
async fn registry_tour(store: &S3Store, bucket: &str, weak_job_id: &str) -> Result<()> {
    let registry = pipeline::registry::Registry::new(store, bucket);
    println!();
    println!("$ lambda-vision models list");
    crate::models::print_versions(store, bucket).await?;
    println!("$ lambda-vision models promote {weak_job_id}");
    let promoted = registry
        .promote(weak_job_id, vision::BUNDLED_MODEL_SHA256)
        .await?;
    println!("serving {}", promoted.model_id);
    println!("$ lambda-vision models rollback");
    let rolled_back = registry.rollback(vision::BUNDLED_MODEL_SHA256).await?;
    println!("rolled back: serving {}", rolled_back.model_id);
    Ok(())
}

/// The settings the SAM template would give the functions, for the demo's buckets and outbox.
fn pipeline_config(args: &DemoArgs, outbox: &Path) -> Result<Config> {
    let settings = [
        ("INPUT_BUCKET", args.input_bucket.clone()),
        ("RESULTS_BUCKET", args.results_bucket.clone()),
        ("TRAINER_FUNCTION", "trainer (in-process)".to_owned()),
        // One container classifies before and right after training: it must see the new
        // model at once, not within the deployed stack's 30 s.
        ("MODEL_CACHE_SECONDS", "0".to_owned()),
        (
            "SENDER_ADDRESS",
            args.ses_from
                .clone()
                .unwrap_or_else(|| "lambda-vision-demo@example.com".to_owned()),
        ),
        (
            "MAIL_OUTBOX_DIR",
            match args.ses_from {
                Some(_) => String::new(),
                None => outbox.display().to_string(),
            },
        ),
    ];
    Ok(Config::from_lookup(|name| {
        settings
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    })?)
}
