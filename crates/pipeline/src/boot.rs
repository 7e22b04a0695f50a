//! What every Lambda binary does around its handler, written once: JSON logs, the EMF metrics
//! recorder, the configuration and AWS settings at cold start; one metrics flush and one
//! `Diagnostic` per invocation. The binaries in `functions/` only build their handler.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde::de::DeserializeOwned;

use crate::config::Config;
use crate::error::PipelineError;
use crate::launcher::{LambdaLauncher, StateMachineLauncher};
use crate::observe;
use crate::store::{S3Store, load_aws_config};

/// A function's cold-start state: read once per container, shared by every invocation.
pub struct Boot {
    pub config: Config,
    pub aws: aws_config::SdkConfig,
    metrics: &'static metrics_cloudwatch_embedded::Collector,
}

impl Boot {
    /// Sets up logging and metrics for `function` (the metrics' `Function` dimension) and reads
    /// the configuration; a missing or invalid setting stops the cold start with its name.
    pub async fn cold_start(function: &str) -> Result<Boot, lambda_runtime::Error> {
        lambda_runtime::tracing::init_default_subscriber();
        let metrics = observe::install_emf_recorder(function)?;
        let config = Config::from_env()?;
        let aws = load_aws_config().await;
        Ok(Boot {
            config,
            aws,
            metrics,
        })
    }

    pub fn store(&self) -> S3Store {
        S3Store::new(&self.aws)
    }

    /// Asynchronous invokes of the trainer named by `TRAINER_FUNCTION` (the upload trigger
    /// starts jobs with it; the trainer continues its own).
    pub fn trainer_launcher(&self) -> Result<Arc<LambdaLauncher>, PipelineError> {
        let function =
            self.config
                .trainer_function
                .clone()
                .ok_or(PipelineError::MissingConfig {
                    name: "TRAINER_FUNCTION",
                    hint: "the trainer function's name, set by the SAM template",
                })?;
        Ok(Arc::new(LambdaLauncher::new(&self.aws, function)))
    }

    /// The training state machine named by `STATE_MACHINE_ARN`, when the stack has one.
    pub fn state_machine_launcher(&self) -> Option<Arc<StateMachineLauncher>> {
        let arn = self.config.state_machine_arn.clone()?;
        Some(Arc::new(StateMachineLauncher::new(&self.aws, arn)))
    }

    /// Serves invocations until the runtime stops. After each one the metrics are flushed
    /// (one EMF line; stdout goes to CloudWatch Logs) and an error becomes the `Diagnostic`
    /// Lambda records.
    pub async fn serve<E, F, Fut>(&self, handler: F) -> Result<(), lambda_runtime::Error>
    where
        E: DeserializeOwned,
        F: Fn(LambdaEvent<E>) -> Fut,
        Fut: Future<Output = Result<serde_json::Value, PipelineError>>,
    {
        let metrics = self.metrics;
        let handler = &handler;
        lambda_runtime::run(service_fn(move |event: LambdaEvent<E>| async move {
            let response = handler(event).await;
            let _ = metrics.flush(std::io::stdout());
            response.map_err(Diagnostic::from)
        }))
        .await
    }
}

/// The instant this invocation's time runs out, from the runtime's deadline (epoch millis).
pub fn deadline(context: &lambda_runtime::Context) -> Instant {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Instant::now() + Duration::from_millis(context.deadline.saturating_sub(now_ms))
}
