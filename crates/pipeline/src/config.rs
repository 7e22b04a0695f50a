//! Configuration from environment variables, read once at cold start.

use crate::error::{PipelineError, Result};

/// Everything the four functions need to know about their surroundings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where users upload images, datasets and job specs (`INPUT_BUCKET`).
    pub input_bucket: String,
    /// Where predictions, models, caches and results go (`RESULTS_BUCKET`).
    pub results_bucket: String,
    /// The trainer's function name, for asynchronous invokes (`TRAINER_FUNCTION`).
    pub trainer_function: Option<String>,
    /// How often a training job may hand itself on to a fresh invocation (`MAX_CONTINUATIONS`).
    pub max_continuations: u32,
    /// How long a container trusts the `models/current.json` it read before reading it again
    /// (`MODEL_CACHE_SECONDS`, default 30; 0 reads it for every image). A burst of uploads then
    /// costs one read of the pointer, not one per image; a newly trained model is picked up by
    /// each warm container within this time.
    pub model_cache: std::time::Duration,
    /// The verified SES sender (`SENDER_ADDRESS`).
    pub sender_address: Option<String>,
    /// Who gets reports of jobs without a `notify` list (`DEFAULT_RECIPIENTS`, comma-separated).
    pub default_recipients: Vec<String>,
    /// Write report emails as `.eml` files into this folder instead of sending them through
    /// SES (`MAIL_OUTBOX_DIR`; the demo sets it, Lambda leaves it unset).
    pub mail_outbox_dir: Option<std::path::PathBuf>,
    /// The Step Functions state machine that trains big datasets (`STATE_MACHINE_ARN`); unset,
    /// every job runs in the trainer's own chain of invocations.
    pub state_machine_arn: Option<String>,
    /// Jobs whose dataset has more images than this go to the state machine
    /// (`MAP_THRESHOLD_IMAGES`, default 5,000: about 100 s of extraction in one Lambda).
    pub map_threshold_images: usize,
    /// Images per Map child, extracted into one feature pack (`MAP_SHARD_IMAGES`, default 500:
    /// about 15 s at 1 vCPU, and one 2.5 MB pack).
    pub map_shard_images: usize,
    /// The function's memory (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, set by Lambda): a job whose
    /// features would not fit it is refused before any work. Unset outside Lambda.
    pub function_memory_mb: Option<u64>,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`] with any variable source, so tests need not touch the process
    /// environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let required = |name: &'static str| {
            lookup(name).filter(|v| !v.trim().is_empty()).ok_or(PipelineError::MissingConfig {
                name,
                hint: "the SAM template sets it; when running locally, export it or use `lambda-vision demo`",
            })
        };
        let optional = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let whole_number = |name: &'static str, default: u64| match optional(name) {
            None => Ok(default),
            Some(value) => value
                .parse::<u64>()
                .map_err(|_| PipelineError::InvalidConfig {
                    name,
                    reason: format!("{value:?} is not a whole number"),
                }),
        };
        let max_continuations =
            u32::try_from(whole_number("MAX_CONTINUATIONS", 10)?).map_err(|_| {
                PipelineError::InvalidConfig {
                    name: "MAX_CONTINUATIONS",
                    reason: "too large".to_owned(),
                }
            })?;
        let map_shard_images = whole_number("MAP_SHARD_IMAGES", 500)?;
        if !(1..=10_000).contains(&map_shard_images) {
            return Err(PipelineError::InvalidConfig {
                name: "MAP_SHARD_IMAGES",
                reason: format!("{map_shard_images} is not between 1 and 10000"),
            });
        }
        let model_cache_seconds: u64 = match optional("MODEL_CACHE_SECONDS") {
            None => 30,
            Some(value) => value.parse().map_err(|_| PipelineError::InvalidConfig {
                name: "MODEL_CACHE_SECONDS",
                reason: format!("{value:?} is not a whole number of seconds"),
            })?,
        };
        let default_recipients: Vec<String> = optional("DEFAULT_RECIPIENTS")
            .map(|list| {
                list.split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(bad) = default_recipients
            .iter()
            .find(|a| !crate::documents::is_plausible_address(a))
        {
            return Err(PipelineError::InvalidConfig {
                name: "DEFAULT_RECIPIENTS",
                reason: format!("{bad:?} is not an email address"),
            });
        }
        Ok(Config {
            input_bucket: required("INPUT_BUCKET")?,
            results_bucket: required("RESULTS_BUCKET")?,
            trainer_function: optional("TRAINER_FUNCTION"),
            max_continuations,
            model_cache: std::time::Duration::from_secs(model_cache_seconds),
            sender_address: optional("SENDER_ADDRESS"),
            default_recipients,
            mail_outbox_dir: optional("MAIL_OUTBOX_DIR").map(std::path::PathBuf::from),
            state_machine_arn: optional("STATE_MACHINE_ARN"),
            map_threshold_images: whole_number("MAP_THRESHOLD_IMAGES", 5_000)? as usize,
            map_shard_images: map_shard_images as usize,
            function_memory_mb: optional("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
                .and_then(|mb| mb.parse().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_invalid_variables_are_named() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let error = Config::from_lookup(env(&[("INPUT_BUCKET", "in")])).unwrap_err();
        assert!(error.to_string().contains("RESULTS_BUCKET"), "{error}");
        let error = Config::from_lookup(env(&[
            ("INPUT_BUCKET", "in"),
            ("RESULTS_BUCKET", "out"),
            ("MAX_CONTINUATIONS", "x"),
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("MAX_CONTINUATIONS"), "{error}");
        let config = Config::from_lookup(env(&[
            ("INPUT_BUCKET", "in"),
            ("RESULTS_BUCKET", "out"),
            ("DEFAULT_RECIPIENTS", " a@example.com, b@example.org "),
        ]))
        .unwrap();
        assert_eq!(
            config.default_recipients,
            ["a@example.com", "b@example.org"]
        );
        assert_eq!(config.max_continuations, 10);
        assert_eq!(config.state_machine_arn, None);
        assert_eq!(
            (config.map_threshold_images, config.map_shard_images),
            (5_000, 500)
        );
        let error = Config::from_lookup(env(&[
            ("INPUT_BUCKET", "in"),
            ("RESULTS_BUCKET", "out"),
            ("MAP_SHARD_IMAGES", "0"),
        ]))
        .unwrap_err();
        assert!(error.to_string().contains("MAP_SHARD_IMAGES"), "{error}");
    }
}
