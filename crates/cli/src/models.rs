//! `lambda-vision models …` and `lambda-vision review list`: the model registry and the review
//! queue of a deployed stack's results bucket (or the demo's, or any S3 endpoint's).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use futures::StreamExt;
use pipeline::documents::{CurrentModel, IMAGENET_MODEL, ReviewEntry};
use pipeline::registry::{ModelVersion, Registry};
use pipeline::{S3Store, layout};

/// Which results bucket, where.
#[derive(Args, Debug)]
pub struct StackArgs {
    /// The stack's results bucket (the `ResultsBucketName` output of `sam deploy`).
    #[arg(long, value_name = "NAME", env = "RESULTS_BUCKET")]
    results_bucket: String,
    /// An S3 endpoint other than AWS (moto, MinIO, the demo's local S3).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ModelsCommand {
    /// The trained versions, oldest first, with their scores and which one serves.
    List(StackArgs),
    /// Make version ID serve (it must exist and run on this build's backbone).
    Promote {
        #[command(flatten)]
        stack: StackArgs,
        /// The model id (a job id, as `models list` shows it).
        #[arg(value_name = "ID")]
        model_id: String,
    },
    /// Make the model that served before the current one serve again.
    Rollback(StackArgs),
}

#[derive(Subcommand, Debug)]
pub enum ReviewCommand {
    /// The predictions below their label's confidence threshold, least confident first.
    List {
        #[command(flatten)]
        stack: StackArgs,
        /// Show at most N entries.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
}

pub fn models(command: &ModelsCommand) -> Result<()> {
    block_on(async {
        match command {
            ModelsCommand::List(stack) => {
                let store = stack.store().await;
                print_versions(&store, &stack.results_bucket).await
            }
            ModelsCommand::Promote { stack, model_id } => {
                let store = stack.store().await;
                let registry = Registry::new(&store, &stack.results_bucket);
                let changed = registry
                    .promote(model_id, vision::BUNDLED_MODEL_SHA256)
                    .await?;
                print_change("", &changed);
                Ok(())
            }
            ModelsCommand::Rollback(stack) => {
                let store = stack.store().await;
                let registry = Registry::new(&store, &stack.results_bucket);
                let changed = registry.rollback(vision::BUNDLED_MODEL_SHA256).await?;
                print_change("rolled back: ", &changed);
                Ok(())
            }
        }
    })
}

/// One line for a change of the serving model: what serves now, what did before.
fn print_change(prefix: &str, changed: &CurrentModel) {
    println!(
        "{prefix}serving {} (was {}); history entry {}",
        changed.model_id,
        changed
            .previous_model_id
            .as_deref()
            .unwrap_or(IMAGENET_MODEL),
        changed.sequence
    );
}

pub fn review(command: &ReviewCommand) -> Result<()> {
    let ReviewCommand::List { stack, limit } = command;
    block_on(async {
        let store = stack.store().await;
        let entries = review_queue(&store, &stack.results_bucket).await?;
        println!(
            "{} image(s) to review, least confident first:",
            entries.len()
        );
        println!(
            "{:>7}  {:>9}  {:<20} {:<20} image",
            "score", "threshold", "top label", "model"
        );
        for entry in entries.iter().take(*limit) {
            println!(
                "{:>6.1} %  {:>7.1} %  {:<20} {:<20} {}",
                100.0 * entry.top_score(),
                100.0 * entry.threshold,
                entry.top.first().map_or("", |p| p.label.as_str()),
                entry.model_id,
                entry.source_key
            );
        }
        Ok(())
    })
}

/// Every review entry, least confident first (16 reads in flight; an entry that cannot be
/// parsed is skipped with a warning on stderr).
pub async fn review_queue(store: &S3Store, bucket: &str) -> Result<Vec<ReviewEntry>> {
    let keys = store
        .list(bucket, layout::REVIEW_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.key)
        .collect();
    let mut reads = std::pin::pin!(store.get_many(bucket, keys, 16));
    let mut entries = Vec::new();
    while let Some((key, object)) = reads.next().await {
        match serde_json::from_slice::<ReviewEntry>(&object?.bytes) {
            Ok(entry) => entries.push(entry),
            Err(error) => eprintln!("warning: s3://{bucket}/{key} is not a review entry: {error}"),
        }
    }
    entries.sort_by(|a, b| a.top_score().total_cmp(&b.top_score()));
    Ok(entries)
}

/// The table of `models list`.
pub async fn print_versions(store: &S3Store, bucket: &str) -> Result<()> {
    let registry = Registry::new(store, bucket);
    let versions = registry.versions().await?;
    let serving = registry.serving().await?;
    match &serving {
        Some(current) => println!(
            "serving {} since {} ({})",
            current.document.model_id, current.document.updated_at, current.document.reason
        ),
        None => println!("serving the ImageNet classes (no trained model promoted yet)"),
    }
    println!(
        "  {:<28} {:<20} {:<12} {:>8} {:>8}  labels",
        "model", "finished", "dataset", "accuracy", "macro-F1"
    );
    for version in &versions {
        println!("{}", version_row(version));
    }
    if versions.is_empty() {
        println!("  (no trained models)");
    }
    Ok(())
}

fn version_row(version: &ModelVersion) -> String {
    let marker = if version.serving { "*" } else { " " };
    let summary = version.result.as_ref().and_then(|r| r.summary.as_ref());
    let finished = version
        .result
        .as_ref()
        .map_or("?", |r| r.finished_at.get(..19).unwrap_or(&r.finished_at));
    let dataset = version
        .result
        .as_ref()
        .and_then(|r| r.dataset.as_deref())
        .unwrap_or("?");
    match summary {
        Some(summary) => format!(
            "{marker} {:<28} {:<20} {:<12} {:>7.1}% {:>8.3}  {}",
            version.model_id,
            finished,
            dataset,
            100.0 * summary.validation_accuracy,
            summary.macro_f1,
            summary.labels.join(", ")
        ),
        None => format!(
            "{marker} {:<28} {:<20} {:<12} {:>8} {:>8}  (no result document)",
            version.model_id, finished, dataset, "?", "?"
        ),
    }
}

impl StackArgs {
    async fn store(&self) -> S3Store {
        S3Store::new(&crate::demo::sdk_config(self.endpoint_url.as_deref()).await)
    }
}

fn block_on<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(work)
}
