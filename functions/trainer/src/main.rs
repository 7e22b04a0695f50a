//! Runs one training job; hands itself on to a fresh invocation before the time limit.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{Diagnostic, Error, LambdaEvent, run, service_fn};
use pipeline::{
    Config, LambdaLauncher, PipelineError, S3Store, Trainer, TrainerEvent, TrainerOptions,
    load_aws_config,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let metrics = pipeline::observe::install_emf_recorder("trainer")?;
    let config = Config::from_env()?;
    let aws = load_aws_config().await;
    let this_function = config
        .trainer_function
        .clone()
        .ok_or(PipelineError::MissingConfig {
            name: "TRAINER_FUNCTION",
            hint: "the trainer's own name, so it can continue a long job",
        })?;
    let launcher = Arc::new(LambdaLauncher::new(&aws, this_function));
    let backbone = Arc::new(vision::Backbone::bundled()?);
    let trainer = Trainer::new(
        config,
        S3Store::new(&aws),
        launcher,
        backbone,
        TrainerOptions::default(),
    );
    run(service_fn(|event: LambdaEvent<TrainerEvent>| {
        let trainer = &trainer;
        async move {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let deadline = Instant::now() + Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
            let outcome = trainer.handle(&event.payload, deadline).await;
            let _ = metrics.flush(std::io::stdout());
            let outcome = outcome?;
            Ok::<_, Diagnostic>(serde_json::json!({ "outcome": format!("{outcome:?}").chars().take(500).collect::<String>() }))
        }
    }))
    .await
}
