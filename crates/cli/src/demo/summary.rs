//! The closing screen: what the job learnt and where everything is.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use pipeline::documents::{JobResult, JobStatus, PredictionDocument};
use pipeline::{S3Store, layout};

/// The closing screen: what the job learnt and where everything is.
pub(super) struct Summary<'a> {
    pub(super) job_id: &'a str,
    pub(super) weak_job_id: &'a str,
    pub(super) workdir: &'a Path,
    pub(super) local: bool,
    pub(super) results_bucket: &'a str,
    pub(super) outbox: Option<&'a Path>,
}

impl Summary<'_> {
    pub(super) async fn print(&self, store: &S3Store, elapsed: Duration) -> Result<()> {
        let bucket = self.results_bucket;
        let result = store
            .get_json::<JobResult>(bucket, &layout::result_key(self.job_id))
            .await?
            .document;
        println!();
        match (&result.status, &result.summary) {
            (JobStatus::Succeeded, Some(summary)) => println!(
                "job {}: validation accuracy {:.1} % on {} images ({} trained, {} skipped), macro-F1 {:.3}; \
                 L2 penalty {} chosen by cross-validation ({:.1} % cross-validated accuracy)",
                self.job_id,
                summary.validation_accuracy * 100.0,
                summary.images_validation,
                summary.images_train,
                summary.images_skipped,
                summary.macro_f1,
                summary.penalty,
                summary.cv_accuracy * 100.0
            ),
            _ => println!(
                "job {}: FAILED: {}",
                self.job_id,
                result.error.as_ref().map_or("", |e| e.message.as_str())
            ),
        }
        let weak = store
            .get_json::<JobResult>(bucket, &layout::result_key(self.weak_job_id))
            .await?
            .document;
        match (&weak.promotion, &weak.error) {
            (Some(promotion), _) => println!("job {}: {}", self.weak_job_id, promotion.reason),
            (None, Some(error)) => println!("job {}: FAILED: {}", self.weak_job_id, error.message),
            (None, None) => println!("job {}: no promotion decision", self.weak_job_id),
        }
        let predictions = store.list(bucket, layout::PREDICTIONS_PREFIX).await?;
        println!("predictions ({}):", predictions.len());
        for listed in &predictions {
            let document = store
                .get_json::<PredictionDocument>(bucket, &listed.key)
                .await?
                .document;
            let verdict = match (document.top.first(), &document.error) {
                (Some(top), _) => format!("{} ({:.0} %)", top.label, top.score * 100.0),
                (None, Some(error)) => format!("error {}: {}", error.kind, error.message),
                (None, None) => "no prediction".to_owned(),
            };
            println!(
                "  {:<34} {:<28} model {}",
                document.source_key, verdict, document.model_id
            );
        }
        print_review(store, bucket).await?;
        println!("files:");
        println!(
            "  predictions  {}",
            self.location(bucket, layout::PREDICTIONS_PREFIX)
        );
        println!(
            "  model        {}",
            self.location(bucket, &layout::model_prefix(self.job_id))
        );
        if let Some(outbox) = self.outbox {
            println!(
                "  email        {}",
                outbox.join(format!("{}.eml", self.job_id)).display()
            );
        }
        println!(
            "  logs         {}",
            self.workdir.join("logs.jsonl").display()
        );
        println!(
            "  metrics      {}",
            self.workdir.join("metrics.jsonl").display()
        );
        println!("total time: {:.1} s", elapsed.as_secs_f64());
        Ok(())
    }

    fn location(&self, bucket: &str, prefix: &str) -> String {
        if self.local {
            self.workdir
                .join("s3")
                .join(bucket)
                .join(prefix)
                .display()
                .to_string()
        } else {
            format!("s3://{bucket}/{prefix}")
        }
    }
}

/// The review queue, least confident first (the first ten).
async fn print_review(store: &S3Store, bucket: &str) -> Result<()> {
    let review = crate::models::review_queue(store, bucket).await?;
    println!(
        "review queue ({}; `lambda-vision review list`), least confident first:",
        review.len()
    );
    for entry in review.iter().take(10) {
        println!(
            "  {:<34} {:<12} {:.1} % < threshold {:.1} %",
            entry.source_key,
            entry.top.first().map_or("", |p| p.label.as_str()),
            100.0 * entry.top_score(),
            100.0 * entry.threshold
        );
    }
    Ok(())
}
