//! S3 ObjectCreated on `results/` → one report email through SES v2.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Diagnostic, Error, LambdaEvent, run, service_fn};
use pipeline::{Config, Notifier, S3Event, S3Store, load_aws_config, mailer_for};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let metrics = pipeline::observe::install_emf_recorder("notifier")?;
    let config = Config::from_env()?;
    let aws = load_aws_config().await;
    let notifier = Notifier::new(
        config.clone(),
        S3Store::new(&aws),
        mailer_for(&config, &aws),
    );
    run(service_fn(|event: LambdaEvent<S3Event>| {
        let notifier = &notifier;
        async move {
            let outcomes = notifier.handle(&event.payload).await;
            let _ = metrics.flush(std::io::stdout());
            let outcomes = outcomes?;
            Ok::<_, Diagnostic>(serde_json::json!({ "records": outcomes.len() }))
        }
    }))
    .await
}
