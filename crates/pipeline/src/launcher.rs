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
            .map_err(|e| {
                PipelineError::Invoke(format!(
                    "the trainer failed: {}",
                    crate::error::describe_sdk_error(&e)
                ))
            })?;
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
            .name(execution_name(job_id))
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
                "the training state machine failed (StartExecution of {}): {}",
                self.arn,
                crate::error::describe_sdk_error(&error)
            ))),
        }
    }
}

/// The execution's name: the job id, which Step Functions keeps unique; an id longer than the
/// 80 characters a name may have keeps its first 63 and a hash of the whole id.
fn execution_name(job_id: &str) -> String {
    use sha2::{Digest, Sha256};
    if job_id.len() <= 80 {
        return job_id.to_owned();
    }
    let hash: String = Sha256::digest(job_id.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let head: String = job_id.chars().take(63).collect();
    format!("{head}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_fit_step_functions_and_stay_unique() {
        assert_eq!(execution_name("flowers-2026"), "flowers-2026");
        let long_a = "a".repeat(128);
        let long_b = format!("{}b", "a".repeat(127));
        let (a, b) = (execution_name(&long_a), execution_name(&long_b));
        assert_eq!((a.len(), b.len()), (80, 80));
        assert!(a.starts_with(&"a".repeat(63)));
        assert_ne!(a, b, "ids that share a prefix get different names");
        assert_eq!(execution_name(&"x".repeat(80)).len(), 80);
    }
}
