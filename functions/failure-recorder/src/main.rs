//! Lambda's on-failure destination for the upload trigger and the trainer, and EventBridge's
//! target for training executions that ended badly → an error prediction per image, a failed
//! result (one email) per job.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent};
use pipeline::boot::Boot;
use pipeline::handlers::{FailureInput, FailureRecorder};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let boot = Boot::cold_start("failure-recorder").await?;
    let recorder = &FailureRecorder::new(boot.config.clone(), boot.store());
    boot.serve(|event: LambdaEvent<FailureInput>| async move {
        let outcomes = recorder.handle_input(&event.payload).await?;
        Ok(serde_json::json!({ "records": outcomes.len() }))
    })
    .await
}
