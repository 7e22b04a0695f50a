//! Starting (and continuing) training jobs. In Lambda this is an asynchronous `Invoke` of the
//! trainer; the demo runs the trainer in-process instead — a real second implementation.

use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};

/// The trainer's input event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerEvent {
    pub job_id: String,
    /// 0 for the first invocation, then 1, 2, … for each hand-over past the time limit.
    #[serde(default)]
    pub continuation: u32,
}

#[async_trait::async_trait]
pub trait TrainerLauncher: Send + Sync {
    /// Starts the trainer for `job_id` without waiting for it.
    async fn start(&self, job_id: &str, continuation: u32) -> Result<()>;
}

/// Invokes the trainer function asynchronously (`InvocationType::Event`).
pub struct LambdaLauncher {
    client: aws_sdk_lambda::Client,
    function: String,
}

impl LambdaLauncher {
    pub fn new(config: &aws_config::SdkConfig, function: String) -> Self {
        LambdaLauncher {
            client: aws_sdk_lambda::Client::new(config),
            function,
        }
    }
}

#[async_trait::async_trait]
impl TrainerLauncher for LambdaLauncher {
    async fn start(&self, job_id: &str, continuation: u32) -> Result<()> {
        let event = TrainerEvent {
            job_id: job_id.to_owned(),
            continuation,
        };
        let payload = serde_json::to_vec(&event).map_err(|e| PipelineError::Encode {
            what: "trainer event",
            reason: e.to_string(),
        })?;
        self.client
            .invoke()
            .function_name(&self.function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::Event)
            .payload(aws_sdk_lambda::primitives::Blob::new(payload))
            .send()
            .await
            .map_err(|e| PipelineError::Invoke(crate::error::describe_sdk_error(&e)))?;
        Ok(())
    }
}

/// Starts the training state machine for a job (the Distributed Map path for big datasets).
/// The execution is named after the job, so a second start of the same job is refused by Step
/// Functions and counts as started: one execution per job, however often it is asked for.
pub struct StateMachineLauncher {
    client: aws_sdk_sfn::Client,
    arn: String,
}

impl StateMachineLauncher {
    pub fn new(config: &aws_config::SdkConfig, arn: String) -> Self {
        StateMachineLauncher {
            client: aws_sdk_sfn::Client::new(config),
            arn,
        }
    }

    pub async fn start(&self, job_id: &str) -> Result<()> {
        let input = serde_json::json!({ "job_id": job_id }).to_string();
        let started = self
            .client
            .start_execution()
            .state_machine_arn(&self.arn)
            .name(job_id)
            .input(input)
            .send()
            .await;
        match started {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_execution_already_exists()) =>
            {
                Ok(())
            }
            Err(error) => Err(PipelineError::Invoke(format!(
                "StartExecution of {}: {}",
                self.arn,
                crate::error::describe_sdk_error(&error)
            ))),
        }
    }
}
