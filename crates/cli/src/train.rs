//! `train`, `eval` and `features`: the trainer Lambda's work on a local folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vision::{
    BUNDLED_MODEL, Backbone, Classifier, DecodeLimits, ExtractOptions, FEATURE_LEN, FeatureSet,
    TrainConfig, TrainedBundle, evaluate, extract_features, train_bundle,
};

use crate::dataset;

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    data: crate::DataArgs,
    /// Where to write head.json, metrics.json, evaluation.jsonl and model.onnx.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    #[command(flatten)]
    training: TrainConfig,
    /// Side of the square the backbone sees (a multiple of 32; the model was trained at 224).
    #[arg(long, default_value_t = vision::DEFAULT_INPUT_SIZE)]
    input_size: u32,
}

pub fn train(args: &TrainArgs) -> anyhow::Result<()> {
    let config = &args.training;
    config.validate()?;
    let started = Instant::now();
    let backbone = Backbone::from_bytes(BUNDLED_MODEL, args.input_size)?;
    let (set, extraction) = extract_folder(&backbone, &args.data.data, args.data.workers)?;

    let bar = bar(
        config.penalties.len() as u64,
        "training",
        "{prefix:>10} [{bar:30}] penalty {pos}/{len} {msg}",
    );
    let bundle = train_bundle(
        &backbone,
        BUNDLED_MODEL,
        &set,
        config,
        millis(extraction),
        |score| {
            bar.inc(1);
            bar.set_message(format!(
                "λ {}: cross-validated accuracy {:.1} %",
                score.penalty,
                100.0 * score.cv_accuracy
            ));
        },
    )?;
    bar.finish_and_clear();
    bundle.write_to_dir(&args.out)?;
    report(&bundle, config, extraction, started.elapsed());
    eprintln!(
        "wrote {}/{{head.json,metrics.json,evaluation.jsonl,model.onnx}}",
        args.out.display()
    );
    Ok(())
}

/// What the run learnt, on stderr: the split, the chosen penalty, the scores per label and
/// what was skipped.
fn report(bundle: &TrainedBundle, config: &TrainConfig, extraction: Duration, total: Duration) {
    let metrics = &bundle.metrics;
    eprintln!(
        "trained {} labels on {} images ({} for validation, {} skipped)",
        bundle.head.labels.len(),
        metrics.images.train + metrics.images.validation,
        metrics.images.validation,
        metrics.images.skipped
    );
    let chosen = &metrics.chosen_penalty;
    eprintln!(
        "L2 penalty {} chosen by {}-fold cross-validation: cross-validated accuracy {:.2} %, log-loss {:.4}",
        chosen.penalty,
        config.folds,
        100.0 * chosen.cv_accuracy,
        chosen.cv_log_loss
    );
    eprintln!(
        "{} accuracy {:.2} %, macro-F1 {:.3}{}",
        metrics.evaluated_on,
        100.0 * metrics.evaluation.accuracy,
        metrics.evaluation.macro_f1,
        if metrics.refitted_with_validation {
            " (then refitted on all images)"
        } else {
            ""
        }
    );
    if !metrics.solver.converged {
        eprintln!(
            "warning: the final fit stopped at --max-iterations {} before converging",
            config.max_iterations
        );
    }
    for class in &metrics.evaluation.per_class {
        eprintln!(
            "  {:<20} precision {:.3}  recall {:.3}  f1 {:.3}  support {}",
            class.label, class.precision, class.recall, class.f1, class.support
        );
    }
    for skipped in metrics.skipped.iter().take(10) {
        eprintln!("  skipped {}: {}", skipped.key, skipped.reason);
    }
    if metrics.skipped.len() > 10 {
        eprintln!(
            "  … and {} more skipped (see metrics.json)",
            metrics.skipped.len() - 10
        );
    }
    eprintln!(
        "extraction {:.1} s, head training {:.2} s, total {:.1} s",
        extraction.as_secs_f64(),
        metrics.timings.head_training_ms / 1000.0,
        total.as_secs_f64()
    );
}

pub fn eval(model: &Path, data: &Path, workers: Option<usize>) -> anyhow::Result<()> {
    let backbone = Arc::new(Backbone::bundled()?);
    let classifier = Classifier::from_bundle_dir(Arc::clone(&backbone), model)
        .with_context(|| format!("cannot load the model in {}", model.display()))?;
    let head = classifier
        .head()
        .context("the model directory has no trained head")?;
    let (set, _) = extract_folder(&backbone, data, workers)?;
    let mut truth = Vec::with_capacity(set.len());
    for label in &set.labels {
        match head.labels.iter().position(|known| known == label) {
            Some(index) => truth.push(index),
            None => bail!(
                "label `{label}` in {} is not one the model knows ({:?})",
                data.display(),
                head.labels
            ),
        }
    }
    let predicted: Vec<usize> = (0..set.len())
        .map(|row| head.predict(set.row(row)))
        .collect();
    println!(
        "{}",
        serde_json::to_string(&evaluate(&truth, &predicted, &head.labels))?
    );
    Ok(())
}

pub fn features(data: &Path, workers: Option<usize>, out: &Path) -> anyhow::Result<()> {
    let backbone = Backbone::bundled()?;
    let (set, _) = extract_folder(&backbone, data, workers)?;
    let (labels, targets) = vision::head::label_targets(&set.labels);
    std::fs::write(out, npy_f32(&set.features, set.len(), FEATURE_LEN))
        .with_context(|| format!("cannot write {}", out.display()))?;
    let sidecar = out.with_extension("json");
    let document = serde_json::json!({
        "labels": labels, "targets": targets, "keys": set.keys, "skipped": set.skipped,
    });
    std::fs::write(&sidecar, serde_json::to_vec(&document)?)
        .with_context(|| format!("cannot write {}", sidecar.display()))?;
    eprintln!(
        "wrote {} feature rows to {} and {}",
        set.len(),
        out.display(),
        sidecar.display()
    );
    Ok(())
}

/// Extracts a folder's features with a progress bar; returns them and the time taken.
fn extract_folder(
    backbone: &Backbone,
    data: &Path,
    workers: Option<usize>,
) -> anyhow::Result<(FeatureSet, Duration)> {
    let entries = dataset::scan(data)?;
    let mut options = ExtractOptions {
        total: Some(entries.len()),
        ..ExtractOptions::default()
    };
    if let Some(workers) = workers {
        options.workers = workers;
    }
    let bar = bar(
        entries.len() as u64,
        "extracting",
        "{prefix:>10} [{bar:30}] {pos}/{len} images, {per_sec}, ETA {eta}",
    );
    let started = Instant::now();
    let source = dataset::source(entries, DecodeLimits::default());
    let set = extract_features(backbone, source, &options, |progress| {
        bar.set_position(progress.done as u64)
    })?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    eprintln!(
        "extracted features of {} images in {:.1} s ({:.1} images/s, {} workers), {} skipped",
        set.len(),
        elapsed.as_secs_f64(),
        (set.len() + set.skipped.len()) as f64 / elapsed.as_secs_f64().max(1e-9),
        options.workers,
        set.skipped.len()
    );
    Ok((set, elapsed))
}

fn bar(length: u64, prefix: &'static str, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(length).with_prefix(prefix);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A NumPy `.npy` (format 1.0) holding a little-endian float32 matrix — small enough to write
/// by hand, and readable by `numpy.load` without any extra package.
fn npy_f32(values: &[f32], rows: usize, columns: usize) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {columns}), }}");
    // Magic (6) + version (2) + length (2) + header + newline must be a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    bytes
}
