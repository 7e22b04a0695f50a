//! The `lambda-vision classify` contract, run as a user runs it: the real binary and model.

use std::path::PathBuf;
use std::process::{Command, Output};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../vision/tests/data")
        .join(name)
}

fn classify(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lambda-vision"))
        .arg("classify")
        .args(args)
        .output()
        .expect("runs")
}

fn lines(output: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

#[test]
fn classifies_in_input_order_and_reports_failures_in_line() {
    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    let png_named_jpg = scratch.join("really-a-png.jpg");
    std::fs::copy(data("chelsea_256.png"), &png_named_jpg).unwrap();
    let html = scratch.join("page.jpg");
    std::fs::write(&html, "<!doctype html><p>hi</p>").unwrap();
    let truncated = scratch.join("truncated.jpg");
    std::fs::write(
        &truncated,
        &std::fs::read(data("coffee.jpg")).unwrap()[..20_000],
    )
    .unwrap();
    let empty = scratch.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let missing = scratch.join("missing.jpg");

    let chelsea = data("chelsea.jpg");
    let coffee = data("coffee.jpg");
    let inputs = [
        &chelsea,
        &html,
        &png_named_jpg,
        &truncated,
        &empty,
        &missing,
        &coffee,
    ];
    let args: Vec<&std::ffi::OsStr> = std::iter::once("--top".as_ref())
        .chain(std::iter::once("3".as_ref()))
        .chain(inputs.iter().map(|p| p.as_os_str()))
        .collect();
    let output = classify(&args);
    assert_eq!(output.status.code(), Some(1), "some inputs failed");
    let lines = lines(&output);
    assert_eq!(lines.len(), inputs.len());
    for (line, input) in lines.iter().zip(inputs) {
        assert_eq!(line["path"], input.display().to_string());
    }
    assert_eq!(lines[0]["top"][0]["label"], "Egyptian cat");
    assert_eq!(lines[0]["top"][0]["index"], 285);
    assert_eq!(lines[0]["top"].as_array().unwrap().len(), 3);
    assert_eq!(
        (lines[0]["width"].as_u64(), lines[0]["height"].as_u64()),
        (Some(451), Some(300))
    );
    let expected_kinds = [
        None,
        Some("unsupported_format"),
        None,
        Some("truncated"),
        Some("empty"),
        Some("io"),
        None,
    ];
    for (line, kind) in lines.iter().zip(expected_kinds) {
        assert_eq!(line["error"]["kind"].as_str(), kind, "{line}");
        if kind.is_some() {
            assert!(
                line["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
            assert!(line.get("top").is_none());
        }
    }
    assert_eq!(
        lines[2]["top"][0]["index"], 285,
        "content, not the name, decides the format"
    );
    assert_eq!(lines[6]["top"][0]["label"], "espresso");
    // Field order is part of the contract.
    let first = String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .unwrap()
        .to_owned();
    assert!(first.starts_with("{\"path\":"), "{first}");
    assert!(first.find("\"top\"") < first.find("\"width\""), "{first}");
}

#[test]
fn exits_zero_when_everything_classified() {
    let output = classify(&[data("coffee.jpg").as_os_str()]);
    assert_eq!(output.status.code(), Some(0));
    let lines = lines(&output);
    assert_eq!(
        lines[0]["top"].as_array().unwrap().len(),
        5,
        "default --top is 5"
    );
    let total: f64 = lines[0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["score"].as_f64().unwrap())
        .sum();
    assert!(total > 0.9 && total <= 1.0 + 1e-6);
}

#[test]
fn usage_errors_and_bad_models_exit_two() {
    assert_eq!(classify(&[]).status.code(), Some(2), "no files");
    assert_eq!(
        classify(&[
            "--top".as_ref(),
            "0".as_ref(),
            data("coffee.jpg").as_os_str()
        ])
        .status
        .code(),
        Some(2)
    );
    let scratch = tempfile::tempdir().unwrap();
    let scratch = scratch.path();
    let bogus = scratch.join("model.onnx");
    std::fs::write(&bogus, b"not a protobuf").unwrap();
    let output = classify(&[
        "--model".as_ref(),
        bogus.as_os_str(),
        data("coffee.jpg").as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot load the ONNX model"));
}
