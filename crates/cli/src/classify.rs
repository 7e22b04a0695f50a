//! `lambda-vision classify`: one JSON line per input, in input order.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use vision::{Backbone, DEFAULT_INPUT_SIZE, DecodeLimits, VisionError};

pub fn run(model: Option<&Path>, top: usize, files: &[PathBuf]) -> ExitCode {
    let backbone = match model {
        Some(path) => Backbone::from_path(path, DEFAULT_INPUT_SIZE),
        None => Backbone::bundled(),
    };
    let backbone = match backbone {
        Ok(backbone) => backbone,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(2);
        }
    };
    let limits = DecodeLimits::default();
    let mut stdout = BufWriter::new(std::io::stdout().lock());
    let mut failures = 0usize;
    for path in files {
        let line = match classify_file(&backbone, &limits, path, top) {
            Ok(classification) => json!({
                "path": path.display().to_string(),
                "top": classification.top,
                "width": classification.width,
                "height": classification.height,
            }),
            Err((kind, message)) => {
                failures += 1;
                json!({
                    "path": path.display().to_string(),
                    "error": { "kind": kind, "message": message },
                })
            }
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
    backbone: &Backbone,
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
    backbone
        .classify(&bytes, limits, top)
        .map_err(|e: VisionError| (e.kind(), e.to_string()))
}
