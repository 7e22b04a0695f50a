//! `train` → `eval` → `classify --model DIR`, as a user runs them, on a small real dataset.

#[path = "../../vision/tests/support/fixtures.rs"]
mod fixtures;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(name: &str) -> PathBuf {
    fixtures::fixtures_dir().join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lambda-vision"))
        .args(args)
        .output()
        .expect("runs")
}

fn dataset(root: &Path) {
    for (label, name) in fixtures::dataset_files() {
        std::fs::create_dir_all(root.join(&label)).unwrap();
        std::fs::copy(data(&name), root.join(&label).join(&name)).unwrap();
    }
    std::fs::write(root.join("coffee/notes.txt"), "not an image").unwrap();
    std::fs::write(root.join(".DS_Store"), "hidden files are ignored").unwrap();
}

#[test]
fn train_eval_and_classify_with_the_trained_head() {
    let scratch = tempfile::tempdir().unwrap();
    let images = scratch.path().join("images");
    let model = scratch.path().join("model");
    dataset(&images);
    let (images_arg, model_arg) = (images.to_str().unwrap(), model.to_str().unwrap());

    let train = run(&[
        "train",
        "--data",
        images_arg,
        "--out",
        model_arg,
        "--min-images-per-class",
        "2",
        "--validation-split",
        "0.3",
        "--seed",
        "7",
    ]);
    let stderr = String::from_utf8_lossy(&train.stderr);
    assert!(train.status.success(), "{stderr}");
    assert!(
        stderr.contains("validation accuracy"),
        "one-screen summary: {stderr}"
    );
    assert!(
        stderr.contains("coffee/notes.txt"),
        "skipped files are listed: {stderr}"
    );
    for file in ["head.json", "metrics.json", "model.onnx"] {
        assert!(model.join(file).is_file(), "{file}");
    }
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["skipped"][0]["kind"], "unsupported_format");
    assert_eq!(metrics["images"]["skipped"], 1);
    assert_eq!(
        metrics["penalty_search"].as_array().map(Vec::len),
        Some(7),
        "every default penalty is scored"
    );
    assert!(metrics["chosen_penalty"]["cv_accuracy"].as_f64().is_some());
    let head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("head.json")).unwrap()).unwrap();
    assert_eq!(head["labels"], serde_json::json!(["cat", "coffee"]));
    assert_eq!(head["weights"].as_array().unwrap().len(), 2);
    assert_eq!(head["weights"][0].as_array().unwrap().len(), 1280);

    // Retraining with the same seed gives the same head, byte for byte.
    let again = scratch.path().join("again");
    let retrain = run(&[
        "train",
        "--data",
        images_arg,
        "--out",
        again.to_str().unwrap(),
        "--min-images-per-class",
        "2",
        "--validation-split",
        "0.3",
        "--seed",
        "7",
        "--workers",
        "1",
    ]);
    assert!(retrain.status.success());
    assert_eq!(
        std::fs::read(model.join("head.json")).unwrap(),
        std::fs::read(again.join("head.json")).unwrap()
    );

    let eval = run(&["eval", "--model", model_arg, "--data", images_arg]);
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let evaluation: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(evaluation["labels"], serde_json::json!(["cat", "coffee"]));
    assert!(
        evaluation["accuracy"].as_f64().unwrap() >= 0.85,
        "{evaluation}"
    );
    assert_eq!(evaluation["per_class"][0]["support"], 5);
    let confusion: u64 = evaluation["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(confusion, 8, "every usable image counted once");
    for key in ["accuracy", "macro_f1", "labels", "per_class", "confusion"] {
        assert!(evaluation.get(key).is_some(), "{key}");
    }

    let classify = run(&[
        "classify",
        "--model",
        model_arg,
        data("coffee.jpg").to_str().unwrap(),
    ]);
    assert!(classify.status.success());
    let line: serde_json::Value = serde_json::from_slice(&classify.stdout).unwrap();
    assert_eq!(line["top"][0]["label"], "coffee");
    assert_eq!(
        line["top"].as_array().unwrap().len(),
        2,
        "only the trained labels"
    );
}

#[test]
fn training_errors_are_clear() {
    let scratch = tempfile::tempdir().unwrap();
    let images = scratch.path().join("images");
    dataset(&images);
    let out = scratch.path().join("model");
    let output = run(&[
        "train",
        "--data",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("label `coffee` has 3 usable images, fewer than the minimum of 5"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing written on failure");

    let output = run(&[
        "train",
        "--data",
        scratch.path().join("nothing").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read dataset folder"));

    let output = run(&[
        "train",
        "--data",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--folds",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("`folds`"));
}
