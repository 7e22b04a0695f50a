//! `lambda-vision demo` as a newcomer runs it: the in-process S3, the three handlers, the
//! training job and the `.eml` report — then again, reusing the folder, and again from fresh.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const RESULTS: &str = "s3/lambda-vision-demo-results";

fn demo(workdir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lambda-vision"))
        .arg("demo")
        .arg("--workdir")
        .arg(workdir)
        .args(extra)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .expect("runs")
}

fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "demo failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap()
}

fn emails(workdir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workdir.join("outbox"))
        .map(|dir| dir.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// The job id is the email's file stem.
fn job_id(email: &Path) -> String {
    email.file_stem().unwrap().to_string_lossy().into_owned()
}

#[test]
fn demo_runs_the_pipeline_to_an_email_and_runs_again() {
    let scratch = tempfile::tempdir().unwrap();
    let workdir = scratch.path().join("demo");

    // First run, fresh.
    let output = demo(&workdir, &[]);
    assert_success(&output);
    // Two jobs, two reports: the main one and the deliberately weaker challenger.
    let mut outbox = emails(&workdir);
    assert_eq!(outbox.len(), 2, "{outbox:?}");
    outbox.sort_by_key(|path| job_id(path).ends_with("-small"));
    let job = job_id(&outbox[0]);
    let weak_job = job_id(&outbox[1]);
    assert_eq!(weak_job, format!("{job}-small"));
    let result = json(&workdir.join(RESULTS).join(format!("results/{job}.json")));
    assert_eq!(result["status"], "succeeded", "{result}");
    let accuracy = result["summary"]["validation_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.7, "digits should be learnt: {accuracy}");

    // The email is a standard message reporting that accuracy, with the chart inline.
    let email = std::fs::read_to_string(&outbox[0]).unwrap();
    let shown = format!("{:.1} %", accuracy * 100.0);
    assert!(email.contains(&shown), "email lacks {shown}");
    for header in [
        "From: ",
        "To: you@example.com",
        "Subject: ",
        "Content-Type: image/png",
        "Content-ID: <curves>",
        "Content-ID: <confusion>",
    ] {
        assert!(email.contains(header), "email lacks {header:?}");
    }

    // The weaker challenger met the serving model on its held-out images and lost.
    let weak = json(
        &workdir
            .join(RESULTS)
            .join(format!("results/{weak_job}.json")),
    );
    assert_eq!(weak["promotion"]["promoted"], false, "{weak}");
    assert_eq!(weak["promotion"]["serving"], job.as_str(), "{weak}");
    let weak_email = std::fs::read_to_string(&outbox[1]).unwrap();
    assert!(weak_email.contains("not promoted"), "the report says so");
    // Promoted by hand and rolled back: the first model serves, after three changes.
    let current = json(&workdir.join(RESULTS).join("models/current.json"));
    assert_eq!(current["model_id"], job.as_str());
    assert_eq!(current["action"], "rolled_back");
    assert_eq!(current["sequence"], 3);
    let history = std::fs::read_dir(workdir.join(RESULTS).join("model-history")).unwrap();
    assert_eq!(history.count(), 3);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&shown),
        "summary lacks the accuracy:\n{stdout}"
    );
    for step in [
        "$ lambda-vision models list".to_owned(),
        format!("$ lambda-vision models promote {weak_job}"),
        format!("rolled back: serving {job}"),
        "review queue (".to_owned(),
    ] {
        assert!(stdout.contains(&step), "summary lacks {step:?}:\n{stdout}");
    }
    assert!(
        stdout.contains(&outbox[0].display().to_string()),
        "{stdout}"
    );

    // Photos were classified with the ImageNet classes before training...
    let cat = json(
        &workdir
            .join(RESULTS)
            .join("predictions/photos/chelsea.jpg.json"),
    );
    assert_eq!(cat["model_id"], "imagenet");
    assert_eq!(cat["top"][0]["label"], "Egyptian cat");
    // ...and the new digits by the model just trained, mostly right.
    let mut right = 0;
    for entry in std::fs::read_dir(workdir.join(RESULTS).join("predictions/digits")).unwrap() {
        let path = entry.unwrap().path();
        let prediction = json(&path);
        assert_eq!(prediction["model_id"], job.as_str(), "{}", path.display());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let truth = name.strip_prefix("digit-").unwrap()[..1].to_owned();
        right += usize::from(prediction["top"][0]["label"] == truth.as_str());
    }
    assert!(right >= 7, "only {right} of 10 new digits right");
    // The model files are browsable.
    for file in [
        "head.json",
        "metrics.json",
        "model.onnx",
        "evaluation.jsonl",
        "misclassified.json",
    ] {
        let path = workdir.join(RESULTS).join(format!("models/{job}/{file}"));
        assert!(path.is_file(), "{} missing", path.display());
    }

    // Observability: EMF metric lines and JSON logs with the request id and key per record.
    let metrics = std::fs::read_to_string(workdir.join("metrics.jsonl")).unwrap();
    for name in [
        "ImagesClassified",
        "InferenceMs",
        "ValidationAccuracy",
        "JobDurationSeconds",
        "EmailsSent",
    ] {
        assert!(metrics.contains(&format!("\"{name}\"")), "no {name} metric");
    }
    let emails_sent: u64 = metrics
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter_map(|line| line["EmailsSent"].as_u64())
        .sum();
    assert_eq!(emails_sent, 2);
    let logs = std::fs::read_to_string(workdir.join("logs.jsonl")).unwrap();
    let record_line = logs
        .lines()
        .find(|line| line.contains("images/photos/chelsea.jpg"))
        .expect("a log line for chelsea.jpg");
    let record_line: Value = serde_json::from_str(record_line).unwrap();
    assert!(
        record_line["spans"][0]["requestId"].is_string(),
        "{record_line}"
    );
    assert_eq!(record_line["span"]["key"], "images/photos/chelsea.jpg");

    // Second run reusing the folder: a new job and email; the unchanged images are not redone.
    let output = demo(&workdir, &["--keep"]);
    assert_success(&output);
    assert_eq!(emails(&workdir).len(), 4);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.matches("AlreadyPredicted").count(), 13, "{stderr}");

    // Third run from fresh in the same folder: the old buckets and outbox are cleared.
    let output = demo(&workdir, &[]);
    assert_success(&output);
    assert_eq!(emails(&workdir).len(), 2);
}

#[test]
fn demo_refuses_a_folder_it_did_not_make() {
    let scratch = tempfile::tempdir().unwrap();
    std::fs::write(scratch.path().join("precious.txt"), "keep me").unwrap();
    let output = demo(scratch.path(), &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("was not made by the demo"), "{stderr}");
    assert!(scratch.path().join("precious.txt").exists());
}
