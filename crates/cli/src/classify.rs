//! `lambda-vision classify`: one JSON line per input, in input order.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;
use std::sync::Arc;

use vision::{Backbone, Classifier, DEFAULT_INPUT_SIZE, DecodeLimits, Prediction, VisionError};

/// One output line; field order is the documented contract.
#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Classified {
        path: &'a str,
        top: &'a [Prediction],
        width: u32,
        height: u32,
    },
    Failed {
        path: &'a str,
        error: ErrorObject<'a>,
    },
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    kind: &'a str,
    message: &'a str,
}

pub fn run(model: Option<&Path>, top: usize, files: &[PathBuf]) -> ExitCode {
    let classifier = match model {
        Some(dir) if dir.is_dir() => Backbone::bundled()
            .and_then(|backbone| Classifier::from_bundle_dir(Arc::new(backbone), dir)),
        Some(path) => {
            Backbone::from_path(path, DEFAULT_INPUT_SIZE).map(|b| Classifier::imagenet(Arc::new(b)))
        }
        None => Backbone::bundled().map(|b| Classifier::imagenet(Arc::new(b))),
    };
    let classifier = match classifier {
        Ok(classifier) => classifier,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let limits = DecodeLimits::default();
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let mut failures = 0usize;
    for path in files {
        let shown = path.display().to_string();
        let result = classify_file(&classifier, &limits, path, top);
        let line = match &result {
            Ok(classification) => Line::Classified {
                path: &shown,
                top: &classification.top,
                width: classification.width,
                height: classification.height,
            },
            Err((kind, message)) => {
                failures += 1;
                Line::Failed {
                    path: &shown,
                    error: ErrorObject { kind, message },
                }
            }
        };
        let Ok(line) = serde_json::to_string(&line) else {
            return ExitCode::from(2);
        };
        // Flush per line so a consumer sees results as they come.
        if writeln!(stdout, "{line}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return ExitCode::from(2);
        }
    }
    if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn classify_file(
    classifier: &Classifier,
    limits: &DecodeLimits,
    path: &Path,
    top: usize,
) -> Result<vision::Classification, (&'static str, String)> {
    let size = std::fs::metadata(path)
        .map_err(|e| ("io", format!("cannot read {}: {e}", path.display())))?
        .len();
    // Refuse oversized files before reading them into memory.
    limits
        .check_encoded_len(size)
        .map_err(|e| (e.kind(), e.to_string()))?;
    let bytes =
        std::fs::read(path).map_err(|e| ("io", format!("cannot read {}: {e}", path.display())))?;
    classifier
        .classify(&bytes, limits, top)
        .map_err(|e: VisionError| (e.kind(), e.to_string()))
}
