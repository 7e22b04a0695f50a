//! The job report email: a subject with the job id, status and validation accuracy; a plain
//! text part; an HTML part with every user-controlled string escaped; and an inline PNG chart
//! (training curve and confusion matrix). Built with `lettre`, so the same RFC 5322 bytes go to
//! SES v2 (`Raw` content) and to the demo's file outbox.

mod chart;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, Mailboxes, MultiPart, SinglePart};
use vision::Metrics;

use crate::documents::{
    ClassificationSummary, JobResult, JobStatus, LabelCount, PromotePolicy, Promotion,
    TrainingSummary,
};

/// Labels (and error kinds) a reclassification's report lists; the CSV has every image.
const REPORTED_LABELS: usize = 50;
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
    let kind = match (&result.prefix, &result.dataset) {
        (Some(_), _) => "Reclassification job",
        (None, Some(_)) => "Training job",
        (None, None) => "Job",
    };
    let subject = sanitize_header(
        &match (result.status, accuracy, &result.classification) {
            (JobStatus::Succeeded, Some(acc), _) => format!(
                "[lambda-vision] job {job} succeeded: validation accuracy {}",
                percent(acc)
            ),
            (JobStatus::Succeeded, None, Some(found)) => format!(
                "[lambda-vision] job {job} succeeded: {} of {} images classified",
                found.predicted, found.images
            ),
            (JobStatus::Succeeded, None, None) => {
                format!("[lambda-vision] job {job} succeeded")
            }
            (JobStatus::Failed, _, _) => format!("[lambda-vision] job {job} failed"),
        },
        200,
    );
    let mut body = Body {
        images: Vec::new(),
        text: format!("{kind} {job}: {}\n", status_word(result.status)),
        html: format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><h2>{kind} {}: {}</h2>",
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
    if let Some(prefix) = &result.prefix {
        body.text.push_str(&format!("Prefix: {prefix}\n"));
        body.html.push_str(&format!(
            "<p>Prefix: <code>{}</code></p>",
            escape_html(prefix)
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
    if let Some(found) = &result.classification {
        body.classification(found);
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
        } else if metrics.evaluation.labels.len() > chart::MAX_MATRIX_LABELS {
            let note = format!(
                "The confusion matrix of {} labels is too large to draw (more than {}); it is in metrics.json.",
                metrics.evaluation.labels.len(),
                chart::MAX_MATRIX_LABELS
            );
            self.html.push_str(&format!("<p>{note}</p>"));
            self.text.push_str(&format!("\n{note}\n"));
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
        self.table(None, &rows);
        self.text.push_str(&format!(
            "Duration: {:.1} s\n",
            summary.duration_ms / 1000.0
        ));
    }

    /// A reclassification: which model classified, the images per label, the
    /// images without a prediction per reason, and where the CSV of every image is.
    fn classification(&mut self, found: &ClassificationSummary) {
        let without = found.images.saturating_sub(found.predicted);
        let rows = [
            ("Model", found.model_id.clone()),
            (
                "Images",
                format!(
                    "{} listed, {} predicted ({} below their label's threshold), {without} without a prediction",
                    found.images, found.predicted, found.low_confidence
                ),
            ),
            (
                "Every prediction",
                format!("{} (results bucket)", found.predictions_csv),
            ),
            ("Duration", format!("{:.1} s", found.duration_ms / 1000.0)),
        ];
        self.table(None, &rows);
        let shown = |counts: &[LabelCount]| -> Vec<(String, String)> {
            let mut rows: Vec<(String, String)> = counts
                .iter()
                .take(REPORTED_LABELS)
                .map(|count| (count.label.clone(), count.images.to_string()))
                .collect();
            if counts.len() > REPORTED_LABELS {
                let more = counts.len() - REPORTED_LABELS;
                rows.push((format!("… {more} more"), "in the CSV".to_owned()));
            }
            rows
        };
        self.table(Some("Images per label"), &shown(&found.labels));
        if !found.errors.is_empty() {
            self.table(Some("Images without a prediction"), &shown(&found.errors));
        }
    }

    /// A two-column table (name, value), as text lines and as HTML rows, under `title` (the
    /// text lines indented beneath it).
    fn table<N: AsRef<str>, V: AsRef<str>>(&mut self, title: Option<&str>, rows: &[(N, V)]) {
        self.text.push('\n');
        let indent = if title.is_some() { "  " } else { "" };
        if let Some(title) = title {
            self.text.push_str(&format!("{title}:\n"));
            self.html
                .push_str(&format!("<h3>{}</h3>", escape_html(title)));
        }
        self.html
            .push_str("<table border=\"1\" cellpadding=\"4\" style=\"border-collapse:collapse\">");
        for (name, value) in rows {
            let (name, value) = (name.as_ref(), value.as_ref());
            self.text.push_str(&format!("{indent}{name}: {value}\n"));
            self.html.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                escape_html(name),
                escape_html(value)
            ));
        }
        self.html.push_str("</table>");
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
mod tests;
