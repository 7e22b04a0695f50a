//! lambda-vision's pipeline glue: the four Lambda handlers (`handlers/`) over the pieces they
//! share — the S3 layout, the JSON documents, S3 events, storage, the report and its mailer,
//! configuration and the functions' boot code — so the demo and the tests run exactly what
//! Lambda runs.

pub mod boot;
pub mod clock;
pub mod config;
pub mod documents;
pub mod error;
pub mod event;
pub mod handlers;
pub mod launcher;
pub mod layout;
pub mod loading;
pub mod mailer;
pub mod observe;
pub mod predictions;
pub mod registry;
pub mod report;
pub mod store;

pub use config::Config;
pub use error::{PipelineError, Result};
pub use event::S3Event;
pub use handlers::{
    MapStep, Notifier, ProgressObserver, StepOutput, Trainer, TrainerInput, TrainerOptions,
    TrainerOutcome, TrainingProgress, UploadTrigger,
};
pub use launcher::{LambdaLauncher, StateMachineLauncher, TrainerEvent, TrainerLauncher};
pub use loading::BackboneLoader;
pub use mailer::{Mailer, OutboxMailer, SesMailer, mailer_for};
pub use store::{S3Store, WrittenObject, load_aws_config};
