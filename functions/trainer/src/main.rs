//! Runs one training job; hands itself on to a fresh invocation before the time limit.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent};
use pipeline::boot::{Boot, deadline};
use pipeline::{Trainer, TrainerEvent, TrainerOptions};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let boot = Boot::cold_start("trainer").await?;
    let trainer = &Trainer::new(
        boot.config.clone(),
        boot.store(),
        boot.trainer_launcher()?,
        std::sync::Arc::new(vision::Backbone::bundled()?),
        TrainerOptions::default(),
    );
    boot.serve(|event: LambdaEvent<TrainerEvent>| async move {
        let deadline = deadline(&event.context);
        let outcome = trainer
            .handle_invocation(&event.payload, deadline, &event.context.request_id)
            .await?;
        let outcome: String = format!("{outcome:?}").chars().take(500).collect();
        Ok(serde_json::json!({ "outcome": outcome }))
    })
    .await
}
