//! S3 ObjectCreated on the input bucket → classify `images/**`, start jobs for `jobs/*.json`.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent};
use pipeline::boot::Boot;
use pipeline::{BackboneLoader, S3Event, UploadTrigger};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // First: compiling the model is most of a cold start, and nothing below needs it.
    let backbone = BackboneLoader::spawn(vision::Backbone::bundled);
    let boot = Boot::cold_start("upload-trigger").await?;
    let trigger = &UploadTrigger::new(
        boot.config.clone(),
        boot.store(),
        boot.trainer_launcher()?,
        backbone,
    );
    boot.serve(|event: LambdaEvent<S3Event>| async move {
        let outcomes = trigger.handle(&event.payload).await?;
        Ok(serde_json::json!({ "records": outcomes.len() }))
    })
    .await
}
