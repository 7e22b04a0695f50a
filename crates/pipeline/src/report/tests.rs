//! The report's rendering: escaping, the decision, the charts, the MIME message.

use super::*;
use crate::documents::{ErrorInfo, TrainingSummary};

fn result(job_id: &str, dataset: &str, message: &str) -> JobResult {
    JobResult {
        job_id: job_id.to_owned(),
        status: JobStatus::Failed,
        dataset: Some(dataset.to_owned()),
        prefix: None,
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
        classification: None,
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
    let mut many = metrics.clone();
    let labels: Vec<String> = (0..1000).map(|i| format!("label-{i}")).collect();
    many.evaluation = vision::evaluate(&[0, 1], &[0, 1], &labels);
    assert!(
        chart::confusion_png(&many).is_none(),
        "1,000 labels: no matrix"
    );
    assert!(chart::curves_png(&many).is_some());
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

/// A reclassification's report: its own subject and heading, the counts per label and per
/// error, the CSV's key, every user string escaped, and no more than 50 labels listed.
#[test]
fn a_reclassification_reports_its_counts() {
    use crate::documents::{ClassificationSummary, LabelCount};
    let mut found = result("re", "d", "m");
    found.status = JobStatus::Succeeded;
    found.error = None;
    found.summary = None;
    found.dataset = None;
    found.prefix = Some("images/2025/<x>/".into());
    let mut labels: Vec<LabelCount> = (0..60)
        .map(|i| LabelCount {
            label: format!("label{i:02}"),
            images: 1,
        })
        .collect();
    labels.insert(
        0,
        LabelCount {
            label: "<b>cat</b>".into(),
            images: 7,
        },
    );
    found.classification = Some(ClassificationSummary {
        model_id: "pets-v2".into(),
        images: 70,
        predicted: 67,
        low_confidence: 4,
        labels,
        errors: vec![LabelCount {
            label: "corrupt_image".into(),
            images: 3,
        }],
        predictions_csv: "results/re/predictions.csv".into(),
        duration_ms: 1500.0,
    });
    let report = render(&found, None, &[]);
    assert_eq!(
        report.subject,
        "[lambda-vision] job re succeeded: 67 of 70 images classified"
    );
    assert!(
        report
            .html
            .contains("<h2>Reclassification job re: succeeded</h2>")
    );
    assert!(
        report
            .html
            .contains("&lt;b&gt;cat&lt;/b&gt;</th><td>7</td>")
    );
    assert!(!report.html.contains("<b>cat</b>") && !report.html.contains("<x>"));
    assert!(report.text.contains("  <b>cat</b>: 7\n"), "{}", report.text);
    assert!(report.text.contains("results/re/predictions.csv"));
    assert!(report.text.contains("  corrupt_image: 3\n"));
    assert!(report.text.contains("3 without a prediction"));
    assert!(report.text.contains("… 11 more: in the CSV"));
    assert!(!report.text.contains("label49") && report.text.contains("label48"));
}
