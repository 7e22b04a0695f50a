//! lambda-vision's pipeline glue: everything the three Lambda functions share — the S3 layout,
//! job specs and results, S3 events, storage, email — and the handlers themselves, so the demo
//! and the tests run exactly what Lambda runs.

pub mod chart;
pub mod config;
pub mod email;
pub mod error;
pub mod event;
pub mod job;
pub mod launcher;
pub mod layout;
pub mod loading;
pub mod mail;
pub mod notifier;
pub mod observe;
pub mod store;
pub mod trainer;
pub mod upload;

pub use config::Config;
pub use error::{PipelineError, Result};
pub use event::S3Event;
pub use launcher::{LambdaLauncher, TrainerEvent, TrainerLauncher};
pub use loading::BackboneLoader;
pub use mail::{Mailer, OutboxMailer, SesMailer, mailer_for};
pub use notifier::Notifier;
pub use store::{S3Store, WrittenObject, load_aws_config};
pub use trainer::{ProgressObserver, Trainer, TrainerOptions, TrainerOutcome, TrainingProgress};
pub use upload::UploadTrigger;

/// The current UTC time as RFC 3339, for documents.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
