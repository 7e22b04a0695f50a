//! The demo's stand-in for Lambda: the three real handlers, S3 notifications delivered by the
//! template's rules, asynchronous invokes queued, and Lambda's retry policy.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::MultiProgress;
use pipeline::documents::JobStatus;
use pipeline::event::{BucketRole, Function, notified_function, object_created_event};
use pipeline::{
    Config, Notifier, ProgressObserver, S3Event, S3Store, Trainer, TrainerEvent, TrainerLauncher,
    TrainerOptions, UploadTrigger, WrittenObject, mailer_for,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::Instrument;

use super::progress::say;
use super::{ATTEMPTS, LAMBDA_TIMEOUT};

/// The three functions, and the S3 notifications and asynchronous invokes between them.
pub(super) struct Lambdas {
    trigger: UploadTrigger,
    trainer: Trainer,
    notifier: Notifier,
    writes: UnboundedReceiver<WrittenObject>,
    launches: UnboundedReceiver<TrainerEvent>,
    input_bucket: String,
    results_bucket: String,
    region: String,
    invocations: u64,
    /// Invocations that failed every attempt (in Lambda, they would go to the DLQ).
    pub(super) failures: usize,
    metrics: &'static metrics_cloudwatch_embedded::Collector,
    metrics_file: PathBuf,
    ui: MultiProgress,
}

/// Where the handlers' metrics go: one EMF line per invocation into `metrics_file`.
pub(super) struct Telemetry {
    pub(super) metrics: &'static metrics_cloudwatch_embedded::Collector,
    pub(super) metrics_file: PathBuf,
}

enum Invocation {
    /// An S3 notification for `function`.
    S3(Function, serde_json::Value),
    /// An asynchronous invoke of the trainer.
    Trainer(TrainerEvent),
}

impl Lambdas {
    /// The three handlers as the demo's stack runs them: the trainer in-process, started
    /// through a queue as Lambda queues an asynchronous invoke.
    pub(super) async fn start(
        config: Config,
        store: S3Store,
        aws: &aws_config::SdkConfig,
        writes: UnboundedReceiver<WrittenObject>,
        progress: ProgressObserver,
        telemetry: Telemetry,
        ui: MultiProgress,
    ) -> Result<Lambdas> {
        let backbone = Arc::new(
            tokio::task::spawn_blocking(vision::Backbone::bundled)
                .await
                .context("loading the model panicked")??,
        );
        let (launch_sender, launches) = unbounded_channel();
        let launcher: Arc<dyn TrainerLauncher> = Arc::new(InProcessLauncher(launch_sender));
        let trainer_options = TrainerOptions {
            progress: Some(progress),
            ..TrainerOptions::default()
        };
        Ok(Lambdas {
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
            notifier: Notifier::new(config.clone(), store, mailer_for(&config, aws)),
            writes,
            launches,
            input_bucket: config.input_bucket,
            results_bucket: config.results_bucket,
            region: aws
                .region()
                .map_or("us-east-1".to_owned(), |r| r.to_string()),
            invocations: 0,
            failures: 0,
            metrics: telemetry.metrics,
            metrics_file: telemetry.metrics_file,
            ui,
        })
    }

    /// Delivers events until nothing is left to do: each write may notify a function, whose
    /// writes may notify another, and so on, as in the deployed stack.
    pub(super) async fn pump(&mut self) {
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
                    Function::UploadTrigger => {
                        Ok(lines("upload-trigger", &self.trigger.handle(&event).await?))
                    }
                    Function::Notifier => {
                        Ok(lines("notifier", &self.notifier.handle(&event).await?))
                    }
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

/// One printed line per record outcome of `function`.
fn lines<T: std::fmt::Debug>(function: &str, outcomes: &[T]) -> Vec<String> {
    outcomes
        .iter()
        .map(|outcome| format!("  {function:<15} {outcome:?}"))
        .collect()
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
            .map_err(|_| {
                pipeline::PipelineError::Invoke(
                    "the trainer failed: the demo has stopped".to_owned(),
                )
            })
    }
}
