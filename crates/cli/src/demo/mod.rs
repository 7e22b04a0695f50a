//! `lambda-vision demo`: the whole pipeline on this machine. An S3 server in-process (or any
//! endpoint you name), the demo data uploaded, and every object-created event, shaped as S3
//! sends it and filtered by the template's rules, delivered to the three real handlers —
//! the code the Lambdas run. The report email lands in a file outbox.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use include_dir::{Dir, include_dir};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pipeline::event::{BucketRole, Function, notified_function, object_created_event};
use pipeline::job::{JobResult, JobStatus};
use pipeline::layout;
use pipeline::upload::PredictionDocument;
use pipeline::{
    Config, Notifier, ProgressObserver, S3Event, S3Store, Trainer, TrainerEvent, TrainerLauncher,
    TrainerOptions, TrainingProgress, UploadTrigger, WrittenObject, mailer_for,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::Instrument;

/// The demo's data, compiled in so the binary runs from anywhere (see `demo/README.md`).
static DEMO_DATA: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../../demo");

/// Marks a folder as the demo's, so a fresh run may clear it.
const MARKER: &str = ".lambda-vision-demo";
/// The dataset name the demo trains on.
const DATASET: &str = "digits";
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
    let workdir = prepare_workdir(&args.workdir, args.keep)?;
    let logs = workdir.join("logs.jsonl");
    init_logging(&logs)?;
    let metrics = pipeline::observe::install_emf_recorder("demo")
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;

    let local_server = match &args.endpoint_url {
        Some(_) => None,
        None => Some(local_s3::LocalS3::start(&workdir.join("s3")).await?),
    };
    let aws = aws_config(args, local_server.as_ref()).await;
    let region = aws
        .region()
        .map_or("us-east-1".to_owned(), |r| r.to_string());
    let (writes_sender, writes) = unbounded_channel();
    let store = S3Store::new(&aws).reporting_writes_to(writes_sender);
    for bucket in [&args.input_bucket, &args.results_bucket] {
        ensure_bucket(&store, bucket).await?;
    }

    let outbox = workdir.join("outbox");
    let settings = [
        ("INPUT_BUCKET", args.input_bucket.clone()),
        ("RESULTS_BUCKET", args.results_bucket.clone()),
        ("TRAINER_FUNCTION", "trainer (in-process)".to_owned()),
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
    let config = Config::from_lookup(|name| {
        settings
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    })?;

    let ui = MultiProgress::new();
    let bars = TrainingBars::new(ui.clone());
    let backbone = Arc::new(
        tokio::task::spawn_blocking(vision::Backbone::bundled)
            .await
            .context("loading the model panicked")??,
    );
    let (launch_sender, launches) = unbounded_channel();
    let launcher: Arc<dyn TrainerLauncher> = Arc::new(InProcessLauncher(launch_sender));
    let trainer_options = TrainerOptions {
        progress: Some(bars.observer()),
        ..TrainerOptions::default()
    };
    let mut lambdas = Lambdas {
        trigger: UploadTrigger::new(
            config.clone(),
            store.clone(),
            Arc::clone(&launcher),
            Arc::clone(&backbone),
        ),
        trainer: Trainer::new(
            config.clone(),
            store.clone(),
            launcher,
            backbone,
            trainer_options,
        ),
        notifier: Notifier::new(config.clone(), store.clone(), mailer_for(&config, &aws)),
        writes,
        launches,
        input_bucket: args.input_bucket.clone(),
        results_bucket: args.results_bucket.clone(),
        region,
        invocations: 0,
        failures: 0,
        metrics,
        metrics_file: workdir.join("metrics.jsonl"),
        ui: ui.clone(),
    };

    // 1. Photos (classified with the ImageNet classes), the dataset and the job spec.
    let job_id = new_job_id();
    let spec = serde_json::json!({ "dataset": DATASET, "notify": [args.notify] });
    let mut uploads = demo_files("photos", "images/photos")?;
    uploads.extend(demo_files("dataset", &format!("datasets/{DATASET}"))?);
    uploads.push((
        layout::job_spec_key(&job_id),
        serde_json::to_vec_pretty(&spec)?,
    ));
    say(
        &ui,
        format!("demo: s3 endpoint {}", aws.endpoint_url().unwrap_or("AWS")),
    );
    upload(&ui, &store, &args.input_bucket, uploads).await?;
    lambdas.pump().await;

    // 2. New digits, classified by the model just trained.
    upload(
        &ui,
        &store,
        &args.input_bucket,
        demo_files("new-images", "images/digits")?,
    )
    .await?;
    lambdas.pump().await;
    bars.finish();

    let summary = Summary {
        job_id: &job_id,
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

/// The three functions, and the S3 notifications and asynchronous invokes between them.
struct Lambdas {
    trigger: UploadTrigger,
    trainer: Trainer,
    notifier: Notifier,
    writes: UnboundedReceiver<WrittenObject>,
    launches: UnboundedReceiver<TrainerEvent>,
    input_bucket: String,
    results_bucket: String,
    region: String,
    invocations: u64,
    failures: usize,
    metrics: &'static metrics_cloudwatch_embedded::Collector,
    metrics_file: PathBuf,
    ui: MultiProgress,
}

enum Invocation {
    /// An S3 notification for `function`.
    S3(Function, serde_json::Value),
    /// An asynchronous invoke of the trainer.
    Trainer(TrainerEvent),
}

impl Lambdas {
    /// Delivers events until nothing is left to do: each write may notify a function, whose
    /// writes may notify another, and so on, as in the deployed stack.
    async fn pump(&mut self) {
        let mut queue = VecDeque::new();
        loop {
            while let Ok(written) = self.writes.try_recv() {
                let role = if written.bucket == self.input_bucket {
                    BucketRole::Input
                } else if written.bucket == self.results_bucket {
                    BucketRole::Results
                } else {
                    continue;
                };
                if let Some(function) = notified_function(role, &written.key) {
                    self.invocations += 1;
                    let event = object_created_event(
                        &self.region,
                        &written.bucket,
                        &written.key,
                        written.size,
                        &written.etag,
                        self.invocations,
                    );
                    queue.push_back(Invocation::S3(function, event));
                }
            }
            while let Ok(event) = self.launches.try_recv() {
                queue.push_back(Invocation::Trainer(event));
            }
            let Some(invocation) = queue.pop_front() else {
                return;
            };
            self.invoke(invocation).await;
        }
    }

    /// One asynchronous invocation with Lambda's retry policy; the outcome is printed.
    async fn invoke(&mut self, invocation: Invocation) {
        self.invocations += 1;
        let request_id = format!("demo-{:06}", self.invocations);
        for attempt in 1..=ATTEMPTS {
            let span =
                tracing::info_span!("Lambda runtime invoke", requestId = %request_id, attempt);
            let outcome = self.call(&invocation).instrument(span).await;
            self.flush_metrics();
            match outcome {
                Ok(lines) => {
                    for line in lines {
                        say(&self.ui, line);
                    }
                    return;
                }
                Err(error) if attempt < ATTEMPTS => {
                    say(&self.ui, format!("  retrying after: {error:#}"));
                }
                Err(error) => {
                    say(
                        &self.ui,
                        format!("  FAILED (would go to the DLQ): {error:#}"),
                    );
                    self.failures += 1;
                }
            }
        }
    }

    async fn call(&self, invocation: &Invocation) -> Result<Vec<String>> {
        match invocation {
            Invocation::S3(function, event) => {
                // Deserialised exactly as the Lambda runtime does before calling the handler.
                let event: S3Event = serde_json::from_value(event.clone())?;
                match function {
                    Function::UploadTrigger => Ok(self
                        .trigger
                        .handle(&event)
                        .await?
                        .iter()
                        .map(|o| format!("  upload-trigger  {o:?}"))
                        .collect()),
                    Function::Notifier => Ok(self
                        .notifier
                        .handle(&event)
                        .await?
                        .iter()
                        .map(|o| format!("  notifier        {o:?}"))
                        .collect()),
                    Function::Trainer => bail!("the trainer is invoked directly, not by S3"),
                }
            }
            Invocation::Trainer(event) => {
                let outcome = self
                    .trainer
                    .handle(event, Instant::now() + LAMBDA_TIMEOUT)
                    .await?;
                let text = match outcome {
                    pipeline::TrainerOutcome::Finished(result) => format!(
                        "job {} {}",
                        result.job_id,
                        match result.status {
                            JobStatus::Succeeded => "succeeded".to_owned(),
                            JobStatus::Failed => format!(
                                "failed: {}",
                                result.error.map(|e| e.message).unwrap_or_default()
                            ),
                        }
                    ),
                    other => format!("{other:?}"),
                };
                Ok(vec![format!("  trainer         {text}")])
            }
        }
    }

    /// One EMF line per invocation, as the Lambda binaries print to CloudWatch Logs.
    fn flush_metrics(&self) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.metrics_file);
        if let Ok(file) = file {
            let _ = self.metrics.flush(file);
        }
    }
}

/// Runs the trainer in this process: queued, as Lambda queues an asynchronous invoke.
struct InProcessLauncher(UnboundedSender<TrainerEvent>);

#[async_trait::async_trait]
impl TrainerLauncher for InProcessLauncher {
    async fn start(&self, job_id: &str, continuation: u32) -> pipeline::Result<()> {
        self.0
            .send(TrainerEvent {
                job_id: job_id.to_owned(),
                continuation,
            })
            .map_err(|_| pipeline::PipelineError::Invoke("the demo has stopped".to_owned()))
    }
}

/// Bars for feature extraction and head training, fed by the trainer's progress reports.
#[derive(Clone)]
struct TrainingBars {
    ui: MultiProgress,
    extraction: Arc<Mutex<Option<ProgressBar>>>,
    training: Arc<Mutex<Option<ProgressBar>>>,
}

impl TrainingBars {
    fn new(ui: MultiProgress) -> Self {
        TrainingBars {
            ui,
            extraction: Arc::default(),
            training: Arc::default(),
        }
    }

    fn observer(&self) -> ProgressObserver {
        let bars = self.clone();
        ProgressObserver(Arc::new(move |progress| bars.update(progress)))
    }

    fn update(&self, progress: TrainingProgress) {
        match progress {
            TrainingProgress::DatasetListed { total, cached } => {
                let bar = self.ui.add(bar(total as u64, "extract"));
                bar.set_position(cached as u64);
                replace(&self.extraction, bar);
            }
            TrainingProgress::ImageExtracted { done, .. } => {
                if let Some(bar) = current(&self.extraction) {
                    bar.set_position(done as u64);
                }
            }
            TrainingProgress::PenaltyScored {
                done,
                total,
                cv_accuracy,
            } => {
                let bar = match current(&self.training) {
                    Some(bar) => bar,
                    None => {
                        if let Some(extraction) = current(&self.extraction) {
                            extraction.finish();
                        }
                        let bar = self.ui.add(bar(total as u64, "train"));
                        replace(&self.training, bar.clone());
                        bar
                    }
                };
                bar.set_position(done as u64);
                bar.set_message(format!(
                    "penalty {done}/{total}: cross-validated accuracy {:.1} %",
                    cv_accuracy * 100.0
                ));
            }
        }
    }

    fn finish(&self) {
        for slot in [&self.extraction, &self.training] {
            if let Some(bar) = current(slot) {
                bar.finish();
            }
        }
    }
}

fn current(slot: &Mutex<Option<ProgressBar>>) -> Option<ProgressBar> {
    slot.lock().ok().and_then(|bar| bar.clone())
}

fn replace(slot: &Mutex<Option<ProgressBar>>, bar: ProgressBar) {
    if let Ok(mut slot) = slot.lock()
        && let Some(old) = slot.replace(bar)
    {
        old.finish();
    }
}

fn bar(length: u64, prefix: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(length).with_prefix(prefix);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {per_sec:>10} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Prints above the bars (or plainly when stderr is not a terminal).
fn say(ui: &MultiProgress, line: String) {
    ui.suspend(|| eprintln!("{line}"));
}

/// Uploads `(key, bytes)` pairs to `bucket`, four at a time, with a bar.
async fn upload(
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
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// The embedded files under `folder`, as `(prefix/<relative path>, bytes)`, sorted by key.
fn demo_files(folder: &str, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
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
            files.push((format!("{prefix}/{relative}"), file.contents().to_vec()));
        }
    }
    files.sort();
    Ok(files)
}

/// A job id unique to this run (UTC time), so a second demo trains and reports again.
fn new_job_id() -> String {
    let stamp: String = pipeline::now_rfc3339()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(15)
        .collect();
    format!("demo-{stamp}")
}

/// Creates `dir` (or checks it is the demo's) and, unless `keep`, clears the previous run.
fn prepare_workdir(dir: &Path, keep: bool) -> Result<PathBuf> {
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
fn init_logging(path: &Path) -> Result<()> {
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

/// The SDK's settings: local-s3's own when it runs in-process, else the usual chain (and any
/// `--endpoint-url`). Five attempts either way, so a slow moment does not fail the demo.
async fn aws_config(
    args: &DemoArgs,
    local_server: Option<&local_s3::LocalS3>,
) -> aws_config::SdkConfig {
    let loader = match local_server {
        Some(server) => server.sdk_config_builder(),
        None => {
            let region = aws_config::meta::region::RegionProviderChain::default_provider()
                .or_else(aws_config::Region::new("us-east-1"));
            let mut loader =
                aws_config::defaults(aws_config::BehaviorVersion::latest()).region(region);
            if let Some(endpoint) = &args.endpoint_url {
                loader = loader.endpoint_url(endpoint);
            }
            loader
        }
    };
    loader
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
        .load()
        .await
}

async fn ensure_bucket(store: &S3Store, bucket: &str) -> Result<()> {
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

/// The closing screen: what the job learnt and where everything is.
struct Summary<'a> {
    job_id: &'a str,
    workdir: &'a Path,
    local: bool,
    results_bucket: &'a str,
    outbox: Option<&'a Path>,
}

impl Summary<'_> {
    async fn print(&self, store: &S3Store, elapsed: Duration) -> Result<()> {
        let bucket = self.results_bucket;
        let result = store.get(bucket, &layout::result_key(self.job_id)).await?;
        let result: JobResult = serde_json::from_slice(&result.bytes)?;
        println!();
        match (&result.status, &result.summary) {
            (JobStatus::Succeeded, Some(summary)) => println!(
                "job {}: validation accuracy {:.1} % on {} images ({} trained, {} skipped), macro-F1 {:.3}; \
                 L2 penalty {} chosen by cross-validation ({:.1} % cross-validated accuracy)",
                self.job_id,
                summary.validation_accuracy * 100.0,
                summary.images_validation,
                summary.images_train,
                summary.images_skipped,
                summary.macro_f1,
                summary.penalty,
                summary.cv_accuracy * 100.0
            ),
            _ => println!(
                "job {}: FAILED: {}",
                self.job_id,
                result.error.as_ref().map_or("", |e| e.message.as_str())
            ),
        }
        let predictions = store.list(bucket, layout::PREDICTIONS_PREFIX).await?;
        println!("predictions ({}):", predictions.len());
        for listed in &predictions {
            let object = store.get(bucket, &listed.key).await?;
            let document: PredictionDocument = serde_json::from_slice(&object.bytes)?;
            let verdict = match (document.top.first(), &document.error) {
                (Some(top), _) => format!("{} ({:.0} %)", top.label, top.score * 100.0),
                (None, Some(error)) => format!("error {}: {}", error.kind, error.message),
                (None, None) => "no prediction".to_owned(),
            };
            println!(
                "  {:<34} {:<28} model {}",
                document.source_key, verdict, document.model_id
            );
        }
        println!("files:");
        println!(
            "  predictions  {}",
            self.location(bucket, layout::PREDICTIONS_PREFIX)
        );
        println!(
            "  model        {}",
            self.location(bucket, &layout::model_prefix(self.job_id))
        );
        if let Some(outbox) = self.outbox {
            println!(
                "  email        {}",
                outbox.join(format!("{}.eml", self.job_id)).display()
            );
        }
        println!(
            "  logs         {}",
            self.workdir.join("logs.jsonl").display()
        );
        println!(
            "  metrics      {}",
            self.workdir.join("metrics.jsonl").display()
        );
        println!("total time: {:.1} s", elapsed.as_secs_f64());
        Ok(())
    }

    fn location(&self, bucket: &str, prefix: &str) -> String {
        if self.local {
            self.workdir
                .join("s3")
                .join(bucket)
                .join(prefix)
                .display()
                .to_string()
        } else {
            format!("s3://{bucket}/{prefix}")
        }
    }
}
