//! S3 ObjectCreated on the input bucket → classify `images/**`, start jobs for `jobs/*.json`.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use std::sync::Arc;

use lambda_runtime::{Diagnostic, Error, LambdaEvent, run, service_fn};
use pipeline::{
    BackboneLoader, Config, LambdaLauncher, PipelineError, S3Event, S3Store, UploadTrigger,
    load_aws_config,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // First: compiling the model is most of a cold start, and nothing below needs it.
    let backbone = BackboneLoader::spawn(vision::Backbone::bundled);
    lambda_runtime::tracing::init_default_subscriber();
    let metrics = pipeline::observe::install_emf_recorder("upload-trigger")?;
    let config = Config::from_env()?;
    let aws = load_aws_config().await;
    let trainer = config
        .trainer_function
        .clone()
        .ok_or(PipelineError::MissingConfig {
            name: "TRAINER_FUNCTION",
            hint: "the name of the trainer function, set by the SAM template",
        })?;
    let launcher = Arc::new(LambdaLauncher::new(&aws, trainer));
    let trigger = UploadTrigger::new(config, S3Store::new(&aws), launcher, backbone);
    run(service_fn(|event: LambdaEvent<S3Event>| {
        let trigger = &trigger;
        async move {
            let outcomes = trigger.handle(&event.payload).await;
            // One EMF line per invocation; stdout goes to CloudWatch Logs.
            let _ = metrics.flush(std::io::stdout());
            let outcomes = outcomes?;
            Ok::<_, Diagnostic>(serde_json::json!({ "records": outcomes.len() }))
        }
    }))
    .await
}
