//! `lambda-vision`: the pipeline's ML work on local files, with the same code the Lambdas run.

// The demo's handlers await the AWS SDK's deeply nested futures; computing their layout exceeds
// rustc's default query depth (as in the Lambda binaries).
#![recursion_limit = "256"]

mod classify;
mod dataset;
mod demo;
mod models;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lambda-vision",
    version,
    about = "Classify images and train classifiers with MobileNetV2, locally or on AWS Lambda"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify image files; prints one JSON object per file, in order, on stdout.
    ///
    /// Exit status: 0 when every file was classified, 1 when any failed (each still gets its
    /// line, with an `error`), 2 for usage errors or a model that cannot be loaded.
    Classify {
        /// A trained model directory (from `train`), or an ONNX backbone file to use instead
        /// of the bundled MobileNetV2 with its ImageNet classes.
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// How many classes to print per image.
        #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
        top: u16,
        /// Image files (JPEG, PNG, WebP, GIF, BMP, TIFF; the format is read from the content).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the whole pipeline on this machine: a local S3, the three Lambda handlers, a demo
    /// dataset and photos, a training job, and the report email as an .eml file.
    Demo(demo::DemoArgs),
    /// Train a classifier head on a folder of labelled images (`DIR/<label>/<image>`).
    Train(train::TrainArgs),
    /// Evaluate a trained model on a labelled folder; prints one JSON object on stdout.
    Eval {
        /// The model directory written by `train`.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        #[command(flatten)]
        data: DataArgs,
    },
    /// The trained models in a stack's results bucket: list them, promote one, roll back.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// The review queue: predictions whose top label is below its confidence threshold.
    #[command(subcommand)]
    Review(models::ReviewCommand),
    /// Extract backbone features of a labelled folder to FILE.npy (float32, N×1280) and
    /// FILE.json (labels, targets, keys, skipped files), e.g. to compare other classifiers.
    Features {
        #[command(flatten)]
        data: DataArgs,
        /// Output .npy file; the sidecar is written next to it with a .json extension.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// Where labelled images come from, and how many threads extract their features.
#[derive(Args)]
struct DataArgs {
    /// A folder of `<label>/<image>` files.
    #[arg(long, value_name = "DIR")]
    data: PathBuf,
    /// Extraction threads (default: one per CPU).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Classify { model, top, files } => {
            return classify::run(model.as_deref(), usize::from(top), &files);
        }
        Command::Demo(args) => demo::run(&args),
        Command::Train(args) => train::train(&args),
        Command::Eval { model, data } => train::eval(&model, &data.data, data.workers),
        Command::Features { data, out } => train::features(&data.data, data.workers, &out),
        Command::Models(command) => models::models(&command),
        Command::Review(command) => models::review(&command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(1)
        }
    }
}
