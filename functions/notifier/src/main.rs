//! S3 ObjectCreated on `results/` → one report email through SES v2.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent};
use pipeline::boot::Boot;
use pipeline::{Notifier, S3Event, mailer_for};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let boot = Boot::cold_start("notifier").await?;
    let notifier = &Notifier::new(
        boot.config.clone(),
        boot.store(),
        mailer_for(&boot.config, &boot.aws),
    );
    boot.serve(|event: LambdaEvent<S3Event>| async move {
        let outcomes = notifier.handle(&event.payload).await?;
        Ok(serde_json::json!({ "records": outcomes.len() }))
    })
    .await
}
