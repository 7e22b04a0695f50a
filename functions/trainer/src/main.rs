//! Runs one training job, handing itself on to a fresh invocation before the time limit, or
//! to the training state machine for a big dataset; and runs that state machine's steps.

// The handler's future awaits the AWS SDK's deeply nested futures; computing its layout exceeds
// rustc's default query depth.
#![recursion_limit = "256"]

use lambda_runtime::{Error, LambdaEvent};
use pipeline::boot::{Boot, deadline};
use pipeline::{Trainer, TrainerInput, TrainerOptions};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let boot = Boot::cold_start("trainer").await?;
    let mut trainer = Trainer::new(
        boot.config.clone(),
        boot.store(),
        boot.trainer_launcher()?,
        std::sync::Arc::new(vision::Backbone::bundled()?),
        TrainerOptions::default(),
    );
    if let Some(state_machine) = boot.state_machine_launcher() {
        trainer = trainer.with_state_machine(state_machine);
    }
    let trainer = &trainer;
    boot.serve(|event: LambdaEvent<TrainerInput>| async move {
        let deadline = deadline(&event.context);
        trainer
            .handle_input(&event.payload, deadline, &event.context.request_id)
            .await
    })
    .await
}
