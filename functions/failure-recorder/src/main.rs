//! Lambda's on-failure destination for the upload trigger and the trainer → an error
//! prediction per image, a failed result (one email) per job.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent};
use pipeline::boot::Boot;
use pipeline::handlers::{FailureRecorder, InvocationRecord};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let boot = Boot::cold_start("failure-recorder").await?;
    let recorder = &FailureRecorder::new(boot.config.clone(), boot.store());
    boot.serve(|event: LambdaEvent<InvocationRecord>| async move {
        let outcomes = recorder.handle(&event.payload).await?;
        Ok(serde_json::json!({ "records": outcomes.len() }))
    })
    .await
}
