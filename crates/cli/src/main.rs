//! `lambda-vision`: the pipeline's ML work on local files, with the same code the Lambdas run.

mod classify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lambda-vision",
    version,
    about = "Classify images with MobileNetV2, locally or on AWS Lambda"
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
        /// An ONNX backbone to use instead of the bundled MobileNetV2.
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// How many classes to print per image.
        #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
        top: u16,
        /// Image files (JPEG, PNG, WebP, GIF, BMP, TIFF; the format is read from the content).
        #[arg(value_name = "FILE", required = true)]
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Classify { model, top, files } => {
            classify::run(model.as_deref(), usize::from(top), &files)
        }
    }
}
