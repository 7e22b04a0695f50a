//! The job report email: a subject with the job id, status and validation accuracy; a plain
//! text part; an HTML part with every user-controlled string escaped; and an inline PNG chart
//! (training curve and confusion matrix). Built with `lettre`, so the same RFC 5322 bytes go to
//! SES v2 (`Raw` content) and to the demo's file outbox.

mod chart;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, Mailboxes, MultiPart, SinglePart};
use vision::Metrics;

use crate::documents::{JobResult, JobStatus, PromotePolicy, Promotion, TrainingSummary};
use crate::error::{PipelineError, Result};

/// A rendered report, ready to send.
#[derive(Debug, Clone)]
pub struct Report {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Images the HTML shows inline (`<img src="cid:…">`): the charts and the thumbnails.
    pub images: Vec<InlineImage>,
}

/// One image attached inline and referred to from the HTML by its content id.
#[derive(Debug, Clone, PartialEq)]
pub struct InlineImage {
    pub content_id: String,
    pub content_type: &'static str,
    pub bytes: Vec<u8>,
}

/// A misclassified held-out image with its thumbnail, for the report's gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    pub image: vision::EvaluatedImage,
    pub jpeg: Vec<u8>,
}

/// Removes what could break a header or a line: control characters (CR, LF, NUL, …) become
/// spaces, and the result is cut to `max` characters.
pub fn sanitize_header(text: &str, max: usize) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn percent(value: f64) -> String {
    format!("{:.1} %", 100.0 * value)
}

/// Renders the report of `result` (with `metrics` and the thumbnails of misclassified
/// held-out images for a successful job).
pub fn render(result: &JobResult, metrics: Option<&Metrics>, mistakes: &[Thumbnail]) -> Report {
    let job = &result.job_id;
    let accuracy = result.summary.as_ref().map(|s| s.validation_accuracy);
    let subject = sanitize_header(
        &match (result.status, accuracy) {
            (JobStatus::Succeeded, Some(acc)) => format!(
                "[lambda-vision] job {job} succeeded: validation accuracy {}",
                percent(acc)
            ),
            (JobStatus::Succeeded, None) => format!("[lambda-vision] job {job} succeeded"),
            (JobStatus::Failed, _) => format!("[lambda-vision] job {job} failed"),
        },
        200,
    );
    let mut body = Body {
        images: Vec::new(),
        text: format!("Training job {job}: {}\n", status_word(result.status)),
        html: format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><h2>Training job {}: {}</h2>",
            escape_html(job),
            status_word(result.status)
        ),
    };
    if let Some(dataset) = &result.dataset {
        body.text.push_str(&format!("Dataset: {dataset}\n"));
        body.html.push_str(&format!(
            "<p>Dataset: <code>{}</code></p>",
            escape_html(dataset)
        ));
    }
    if let Some(error) = &result.error {
        body.text.push_str(&format!(
            "\nWhat went wrong ({}):\n{}\n",
            error.kind, error.message
        ));
        body.html.push_str(&format!(
            "<p><strong>What went wrong</strong> (<code>{}</code>):</p><pre>{}</pre>",
            escape_html(&error.kind),
            escape_html(&error.message)
        ));
    }
    if let Some(promotion) = &result.promotion {
        body.promotion(promotion);
    }
    if let Some(summary) = &result.summary {
        body.summary(summary, result.continuations);
    }
    if let Some(metrics) = metrics {
        body.per_label(metrics);
        body.charts(metrics);
        body.mistakes(mistakes);
        body.skipped(metrics);
    }
    if let Some(model) = &result.model {
        let files = format!("{}{{{}}}", model.prefix, model.files.join(","));
        body.text.push_str(&format!("\nModel files: {files}\n"));
        body.html.push_str(&format!(
            "<p>Model files: <code>{}</code></p>",
            escape_html(&files)
        ));
    }
    body.html.push_str("</body></html>");
    Report {
        subject,
        text: body.text,
        html: body.html,
        images: body.images,
    }
}

/// The two parts of the report, written section by section side by side, and the images the
/// HTML part shows.
struct Body {
    text: String,
    html: String,
    images: Vec<InlineImage>,
}

impl Body {
    /// Champion vs challenger: the two scores side by side, the decision, what serves now.
    fn promotion(&mut self, promotion: &Promotion) {
        let verdict = if promotion.promoted {
            "promoted"
        } else {
            "not promoted"
        };
        self.text.push_str(&format!(
            "\nModel {verdict}: {}\nServing now: {}\n",
            promotion.reason, promotion.serving
        ));
        self.html.push_str(&format!(
            "<h3>Champion vs challenger: {verdict}</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th></th><th>model</th><th>accuracy</th><th>macro-F1</th></tr>"
        ));
        let rows = [
            ("challenger (this job)", Some(&promotion.challenger)),
            ("champion (serving before)", promotion.champion.as_ref()),
        ];
        for (role, score) in rows {
            let Some(score) = score else { continue };
            self.text.push_str(&format!(
                "  {role}: {} accuracy {} macro-F1 {:.3}\n",
                score.model_id,
                percent(score.accuracy),
                score.macro_f1
            ));
            self.html.push_str(&format!(
                "<tr><th align=\"left\">{role}</th><td><code>{}</code></td><td>{}</td><td>{:.3}</td></tr>",
                escape_html(&score.model_id),
                percent(score.accuracy),
                score.macro_f1
            ));
        }
        self.html.push_str(&format!(
            "</table><p>{} (policy <code>{}</code>, {} held-out images). Serving now: <code>{}</code>.</p>",
            escape_html(&promotion.reason),
            policy_name(promotion.policy),
            promotion.compared_on,
            escape_html(&promotion.serving)
        ));
    }

    /// The training curves and the confusion matrix, as inline PNGs.
    fn charts(&mut self, metrics: &Metrics) {
        if let Some(png) = chart::curves_png(metrics) {
            self.html.push_str("<h3>Training and validation curves</h3><p><img src=\"cid:curves\" alt=\"log-loss and accuracy against the L2 penalty, on the folds' training images and on their held-out images, with the chosen penalty marked\"></p>");
            self.images.push(InlineImage {
                content_id: "curves".to_owned(),
                content_type: "image/png",
                bytes: png,
            });
        }
        if let Some(png) = chart::confusion_png(metrics) {
            self.html.push_str("<h3>Confusion matrix</h3><p><img src=\"cid:confusion\" alt=\"confusion matrix on the validation images: rows are true labels, columns predictions\"></p>");
            self.images.push(InlineImage {
                content_id: "confusion".to_owned(),
                content_type: "image/png",
                bytes: png,
            });
        }
    }

    /// Thumbnails of the misclassified held-out images, most confident mistakes first.
    fn mistakes(&mut self, mistakes: &[Thumbnail]) {
        if mistakes.is_empty() {
            return;
        }
        self.text
            .push_str("\nMisclassified validation images (true -> predicted, score):\n");
        self.html
            .push_str("<h3>Misclassified validation images</h3><table cellpadding=\"4\"><tr>");
        for (i, mistake) in mistakes.iter().enumerate() {
            let image = &mistake.image;
            let caption = format!(
                "{} → {} ({})",
                image.truth,
                image.predicted,
                percent(f64::from(image.score))
            );
            self.text.push_str(&format!(
                "  {}: {} -> {} ({})\n",
                image.key,
                image.truth,
                image.predicted,
                percent(f64::from(image.score))
            ));
            let content_id = format!("mistake{i}");
            if i > 0 && i % 4 == 0 {
                self.html.push_str("</tr><tr>");
            }
            self.html.push_str(&format!(
                "<td align=\"center\" valign=\"top\" style=\"font-size:12px\"><img src=\"cid:{content_id}\" alt=\"{}\" title=\"{}\"><br>{}</td>",
                escape_html(&image.key),
                escape_html(&image.key),
                escape_html(&caption)
            ));
            self.images.push(InlineImage {
                content_id,
                content_type: "image/jpeg",
                bytes: mistake.jpeg.clone(),
            });
        }
        self.html.push_str("</tr></table>");
    }

    /// The job's figures: one list, written once as text lines and once as table rows.
    fn summary(&mut self, summary: &TrainingSummary, continuations: u32) {
        let rows = [
            ("Validation accuracy", percent(summary.validation_accuracy)),
            (
                "Cross-validated accuracy",
                format!("{} (training split)", percent(summary.cv_accuracy)),
            ),
            ("Macro-F1", format!("{:.3}", summary.macro_f1)),
            (
                "Images",
                format!(
                    "{} train, {} validation, {} skipped",
                    summary.images_train, summary.images_validation, summary.images_skipped
                ),
            ),
            (
                "L2 penalty",
                format!("{} (chosen by cross-validation)", summary.penalty),
            ),
            ("Continuations", continuations.to_string()),
        ];
        self.text.push('\n');
        self.html
            .push_str("<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">");
        for (name, value) in &rows {
            self.text.push_str(&format!("{name}: {value}\n"));
            self.html.push_str(&format!(
                "<tr><th align=\"left\">{name}</th><td>{}</td></tr>",
                escape_html(value)
            ));
        }
        self.html.push_str("</table>");
        self.text.push_str(&format!(
            "Duration: {:.1} s\n",
            summary.duration_ms / 1000.0
        ));
    }

    fn per_label(&mut self, metrics: &Metrics) {
        self.text
            .push_str("\nPer label (precision / recall / F1 / support):\n");
        self.html.push_str("<h3>Per label</h3><table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\"><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>");
        for class in &metrics.evaluation.per_class {
            self.text.push_str(&format!(
                "  {}: {:.3} / {:.3} / {:.3} / {}\n",
                class.label, class.precision, class.recall, class.f1, class.support
            ));
            self.html.push_str(&format!(
                "<tr><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
                escape_html(&class.label),
                class.precision,
                class.recall,
                class.f1,
                class.support
            ));
        }
        self.html.push_str("</table>");
    }

    /// The images training left out, and why (the first 50).
    fn skipped(&mut self, metrics: &Metrics) {
        if metrics.skipped.is_empty() {
            return;
        }
        let count = metrics.skipped.len();
        self.text
            .push_str(&format!("\nSkipped images ({count}):\n"));
        self.html
            .push_str(&format!("<h3>Skipped images ({count})</h3><ul>"));
        for skipped in metrics.skipped.iter().take(50) {
            self.text
                .push_str(&format!("  {}: {}\n", skipped.key, skipped.reason));
            self.html.push_str(&format!(
                "<li><code>{}</code>: {}</li>",
                escape_html(&skipped.key),
                escape_html(&skipped.reason)
            ));
        }
        self.html.push_str("</ul>");
    }
}

fn policy_name(policy: PromotePolicy) -> &'static str {
    match policy {
        PromotePolicy::IfBetter => "if_better",
        PromotePolicy::Always => "always",
        PromotePolicy::Never => "never",
    }
}

fn status_word(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Succeeded => "succeeded",
        JobStatus::Failed => "failed",
    }
}

/// The RFC 5322 message for `report`, from `sender` to `recipients`.
pub fn build_message(report: &Report, sender: &str, recipients: &[String]) -> Result<Vec<u8>> {
    let from: Mailbox = sender.parse().map_err(|e| {
        PipelineError::InvalidEmail(format!("sender {sender:?} is not an address: {e}"))
    })?;
    let mut to = Mailboxes::new();
    for recipient in recipients {
        let mailbox: Mailbox = recipient.parse().map_err(|e| {
            PipelineError::InvalidEmail(format!("recipient {recipient:?} is not an address: {e}"))
        })?;
        to.push(mailbox);
    }
    let mut html = MultiPart::related().singlepart(SinglePart::html(report.html.clone()));
    for image in &report.images {
        let content_type = ContentType::parse(image.content_type)
            .map_err(|e| PipelineError::InvalidEmail(e.to_string()))?;
        html = html.singlepart(
            Attachment::new_inline(image.content_id.clone())
                .body(image.bytes.clone(), content_type),
        );
    }
    let body = MultiPart::alternative()
        .singlepart(SinglePart::plain(report.text.clone()))
        .multipart(html);
    let mut builder = lettre::Message::builder()
        .from(from)
        .subject(report.subject.clone());
    for mailbox in to {
        builder = builder.to(mailbox);
    }
    let message = builder
        .multipart(body)
        .map_err(|e| PipelineError::InvalidEmail(e.to_string()))?;
    Ok(message.formatted())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::{ErrorInfo, TrainingSummary};

    fn result(job_id: &str, dataset: &str, message: &str) -> JobResult {
        JobResult {
            job_id: job_id.to_owned(),
            status: JobStatus::Failed,
            dataset: Some(dataset.to_owned()),
            notify: vec!["owner@example.com".to_owned()],
            error: Some(ErrorInfo {
                kind: "invalid_spec".to_owned(),
                message: message.to_owned(),
            }),
            model: None,
            summary: Some(TrainingSummary {
                labels: vec![],
                validation_accuracy: 0.5,
                macro_f1: 0.5,
                images_train: 1,
                images_validation: 1,
                images_skipped: 0,
                penalty: 0.001,
                cv_accuracy: 0.5,
                duration_ms: 1.0,
            }),
            promotion: None,
            continuations: 0,
            finished_at: "2026-11-29T00:00:00Z".to_owned(),
        }
    }

    #[test]
    fn user_text_is_escaped_in_html() {
        let report = render(
            &result(
                "job<1>",
                "<script>alert(1)</script>",
                "label \"<img src=x onerror=alert(1)>\"",
            ),
            None,
            &[],
        );
        assert!(!report.html.contains("<script>"), "{}", report.html);
        assert!(!report.html.contains("<img src=x"), "{}", report.html);
        assert!(report.html.contains("&lt;script&gt;"));
        assert!(
            report.text.contains("<script>"),
            "plain text stays as written"
        );
    }

    #[test]
    fn the_decision_and_the_mistakes_are_shown_with_user_text_escaped() {
        let mut succeeded = result("job-2", "pets", "m");
        succeeded.status = JobStatus::Succeeded;
        succeeded.error = None;
        let score = |model_id: &str, macro_f1| crate::documents::ModelScore {
            model_id: model_id.to_owned(),
            accuracy: macro_f1,
            macro_f1,
        };
        succeeded.promotion = Some(Promotion {
            policy: PromotePolicy::IfBetter,
            promoted: false,
            reason: "not promoted: macro-F1 0.600 against <b>0.900</b>".to_owned(),
            challenger: score("job-2", 0.6),
            champion: Some(score("job-1", 0.9)),
            compared_on: 20,
            serving: "job-1".to_owned(),
        });
        let mistake = Thumbnail {
            image: vision::EvaluatedImage {
                key: "datasets/pets/<cat>/x.jpg".to_owned(),
                truth: "<cat>".to_owned(),
                predicted: "dog\"onload=\"x".to_owned(),
                score: 0.75,
            },
            jpeg: vec![0xFF, 0xD8, 0xFF],
        };
        let report = render(&succeeded, None, std::slice::from_ref(&mistake));
        assert!(report.html.contains("not promoted"), "{}", report.html);
        assert!(report.html.contains("job-1") && report.html.contains("0.900"));
        assert!(
            report.text.contains("Serving now: job-1"),
            "{}",
            report.text
        );
        assert!(!report.html.contains("<b>0.900"), "reason escaped");
        // Without metrics there is no gallery; with an empty metrics-free report, no images.
        assert!(report.images.is_empty());

        let mut body = Body {
            text: String::new(),
            html: String::new(),
            images: Vec::new(),
        };
        body.mistakes(&[mistake]);
        assert!(
            body.html
                .contains("&lt;cat&gt; → dog&quot;onload=&quot;x (75.0 %)"),
            "{}",
            body.html
        );
        assert!(!body.html.contains("<cat>") && !body.html.contains("\"onload"));
        assert_eq!(body.images[0].content_id, "mistake0");
        assert!(body.html.contains("src=\"cid:mistake0\""));
    }

    #[test]
    fn charts_are_pngs_sized_to_the_labels() {
        let labels: Vec<String> = ["a", "a-rather-long-label-name", "c"]
            .map(String::from)
            .to_vec();
        let evaluation = vision::evaluate(&[0, 1, 2, 2], &[0, 1, 2, 1], &labels);
        let score = |penalty: f64| vision::PenaltyScore {
            penalty,
            cv_accuracy: 0.8,
            cv_log_loss: 0.4,
            train_accuracy: 1.0,
            train_log_loss: 0.1,
            iterations: 10,
        };
        let metrics: Metrics = serde_json::from_value(serde_json::json!({
            "evaluation": evaluation,
            "evaluated_on": "validation",
            "chosen_penalty": score(0.01),
            "penalty_search": [score(1.0), score(0.01), score(0.0001)],
            "solver": {"iterations": 10, "converged": true},
            "refitted_with_validation": true,
            "images": {"train": 8, "validation": 4, "skipped": 0},
            "skipped": [],
            "config": vision::TrainConfig::default(),
            "timings": {"extraction_ms": 1.0, "head_training_ms": 1.0}
        }))
        .unwrap();
        for png in [chart::curves_png(&metrics), chart::confusion_png(&metrics)] {
            let png = png.expect("a chart");
            let image = image::load_from_memory(&png).unwrap().to_rgb8();
            let drawn = image.pixels().filter(|p| p.0 != [255, 255, 255]).count();
            assert!(drawn > 1000, "something drawn: {drawn} pixels");
        }
        let confusion = image::load_from_memory(&chart::confusion_png(&metrics).unwrap()).unwrap();
        assert!(confusion.width() > 200, "room for the cut label names");
    }

    #[test]
    fn headers_cannot_be_injected() {
        let report = render(&result("a\r\nBcc: victim@example.com", "d", "m"), None, &[]);
        assert!(!report.subject.contains('\n') && !report.subject.contains('\r'));
        let raw = String::from_utf8(
            build_message(
                &report,
                "sender@example.com",
                &["owner@example.com".to_owned()],
            )
            .unwrap(),
        )
        .unwrap();
        let headers = raw.split("\r\n\r\n").next().unwrap();
        assert!(!headers.lines().any(|l| l.starts_with("Bcc:")), "{headers}");
        assert!(
            build_message(
                &report,
                "sender@example.com",
                &["x@y.z\r\nBcc: v@e.com".to_owned()]
            )
            .is_err()
        );
    }
}
