//! Publishing a trained job: the model files, the champion-vs-challenger decision, then the
//! result document (which triggers the email); and the failed result of a job that ended badly.
//! Both paths publish here: the trainer's own chain and the state machine's `train` step.

use std::time::Duration;

use tracing::{info, warn};
use vision::TrainedBundle;

use super::{Trained, Trainer, TrainerOutcome, misclassified, promotion};
use crate::clock::now_rfc3339;
use crate::documents::{
    JobResult, JobSpec, JobStatus, MISCLASSIFIED_FILE, ModelInfo, TRAINED_ON_FILE, TrainingSummary,
};
use crate::error::{PipelineError, Result};
use crate::layout;
use crate::observe;
use crate::store::JSON_CONTENT_TYPE;

impl Trainer {
    /// Writes the model files, decides whether the model serves (champion vs challenger), then
    /// writes the result, which triggers the email.
    pub(super) async fn publish(
        &self,
        job_id: &str,
        spec: &JobSpec,
        trained: &Trained,
        continuations: u32,
        duration: Duration,
    ) -> Result<JobResult> {
        let bucket = &self.config.results_bucket;
        let bundle = &trained.bundle;
        let mut files = Vec::new();
        for (name, bytes, content_type) in model_files(bundle) {
            let key = layout::model_file_key(job_id, name);
            self.store
                .put(bucket, &key, bytes.to_vec(), content_type)
                .await?;
            files.push(name.to_owned());
        }
        let trained_on_key = layout::model_file_key(job_id, TRAINED_ON_FILE);
        self.store
            .put_json(bucket, &trained_on_key, &trained.trained_on())
            .await?;
        files.push(TRAINED_ON_FILE.to_owned());
        misclassified::write(
            &self.store,
            &self.config.input_bucket,
            bucket,
            job_id,
            (&bundle.evaluated, &trained.versions),
        )
        .await?;
        let promotion =
            match promotion::promote(&self.store, bucket, job_id, spec.promote, trained).await {
                Ok(promotion) => promotion,
                Err(error) if error.is_transient() => return Err(error),
                // The model trained fine: a pointer that cannot be read or changed keeps it out of
                // service, not out of the bucket, and the result says why.
                Err(error) => promotion::not_decided(job_id, spec.promote, bundle, &error),
            };
        info!(job_id, promoted = promotion.promoted, reason = %promotion.reason, "promotion decided");
        files.push(MISCLASSIFIED_FILE.to_owned());
        let result = JobResult {
            job_id: job_id.to_owned(),
            status: JobStatus::Succeeded,
            dataset: Some(spec.dataset.clone()),
            prefix: None,
            notify: spec.notify.clone(),
            error: None,
            model: Some(ModelInfo {
                prefix: layout::model_prefix(job_id),
                files,
            }),
            summary: Some(summary(bundle, duration)),
            classification: None,
            promotion: Some(promotion),
            continuations,
            finished_at: now_rfc3339(),
        };
        if !self.write_result(job_id, &result).await? {
            return Ok(result);
        }
        if let Some(summary) = &result.summary {
            metrics::histogram!(observe::JOB_DURATION_SECONDS).record(summary.duration_ms / 1000.0);
            metrics::histogram!(observe::VALIDATION_ACCURACY)
                .record(summary.validation_accuracy * 100.0);
        }
        let _ = self
            .store
            .delete(bucket, &layout::checkpoint_key(job_id))
            .await;
        Ok(result)
    }

    pub(super) async fn finish_failed(
        &self,
        result: JobResult,
        error: &PipelineError,
    ) -> Result<TrainerOutcome> {
        warn!(job_id = %result.job_id, %error, "job failed");
        if self.write_result(&result.job_id, &result).await? {
            metrics::counter!(observe::JOBS_FAILED).increment(1);
        }
        Ok(TrainerOutcome::Finished(Box::new(result)))
    }

    /// Writes `results/<id>.json` once; `false` when another invocation already had.
    pub(super) async fn write_result(&self, job_id: &str, result: &JobResult) -> Result<bool> {
        self.store
            .put_json_if_absent(
                &self.config.results_bucket,
                &layout::result_key(job_id),
                result,
            )
            .await
    }
}

/// The model's files under `models/<id>/`: name, bytes, content type.
fn model_files(bundle: &TrainedBundle) -> [(&'static str, &[u8], &'static str); 4] {
    use vision::bundle::{EVALUATION_FILE, HEAD_FILE, METRICS_FILE, ONNX_FILE};
    [
        (ONNX_FILE, &bundle.model_onnx, "application/octet-stream"),
        (HEAD_FILE, &bundle.head_json, JSON_CONTENT_TYPE),
        (METRICS_FILE, &bundle.metrics_json, JSON_CONTENT_TYPE),
        (
            EVALUATION_FILE,
            &bundle.evaluation_jsonl,
            "application/x-ndjson",
        ),
    ]
}

/// The figures of a finished job that its result document and email show.
fn summary(bundle: &TrainedBundle, duration: Duration) -> TrainingSummary {
    let metrics = &bundle.metrics;
    TrainingSummary {
        labels: bundle.head.labels.clone(),
        validation_accuracy: metrics.evaluation.accuracy,
        macro_f1: metrics.evaluation.macro_f1,
        images_train: metrics.images.train,
        images_validation: metrics.images.validation,
        images_skipped: metrics.images.skipped,
        penalty: metrics.chosen_penalty.penalty,
        cv_accuracy: metrics.chosen_penalty.cv_accuracy,
        duration_ms: duration.as_secs_f64() * 1000.0,
    }
}
