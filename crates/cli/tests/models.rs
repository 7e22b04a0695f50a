//! `lambda-vision models` and `lambda-vision review` against a stack's results bucket: the
//! demo fills an S3 server (local-s3, started here) with two models, then the commands list,
//! promote and roll back, and refuse what they cannot do without touching `current.json`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const RESULTS_BUCKET: &str = "lambda-vision-demo-results";

/// Runs `lambda-vision <args>` against the S3 server at `endpoint`.
fn lambda_vision(endpoint: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lambda-vision"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", local_s3::ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", local_s3::SECRET_KEY)
        .env("AWS_REGION", "us-east-1")
        .env("RESULTS_BUCKET", RESULTS_BUCKET)
        .output()
        .expect("runs")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn refused(output: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "should be refused: {stderr}");
    assert!(stderr.contains(message), "{stderr}");
}

fn current(root: &Path) -> Value {
    let path = root.join(RESULTS_BUCKET).join("models/current.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn models_are_listed_promoted_and_rolled_back_from_the_command_line() {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("s3");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(local_s3::LocalS3::start(&root)).unwrap();
    let endpoint = server.endpoint.clone();
    let workdir = scratch.path().join("demo");
    let demo = lambda_vision(&endpoint, &["demo", "--workdir", workdir.to_str().unwrap()]);
    let demo_output = stdout(&demo);
    let job = current(&root)["model_id"].as_str().unwrap().to_owned();
    let weak = format!("{job}-small");
    assert!(demo_output.contains(&weak), "{demo_output}");

    // The table: both versions, the serving one marked, with their scores.
    let list = stdout(&lambda_vision(&endpoint, &["models", "list"]));
    assert!(list.contains(&format!("serving {job}")), "{list}");
    let marked: Vec<&str> = list.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(marked.len(), 1, "{list}");
    assert!(
        marked[0].contains(&job) && !marked[0].contains(&weak),
        "{list}"
    );
    assert!(
        list.contains("digits-small") && list.contains("macro-F1"),
        "{list}"
    );

    // Refusals: nothing to roll back to (the demo already rolled back once), no such model,
    // already serving. current.json is untouched by each.
    let before = current(&root);
    refused(
        &lambda_vision(&endpoint, &["models", "rollback"]),
        "no earlier model to roll back to",
    );
    refused(
        &lambda_vision(&endpoint, &["models", "promote", "no-such-job"]),
        "there is no model \"no-such-job\"",
    );
    refused(
        &lambda_vision(&endpoint, &["models", "promote", &job]),
        "already serving",
    );
    refused(
        &lambda_vision(&endpoint, &["models", "promote", "../escape"]),
        "unsafe model id",
    );
    assert_eq!(current(&root), before);

    // Promote the weak model, then roll back to the first.
    let promoted = stdout(&lambda_vision(&endpoint, &["models", "promote", &weak]));
    assert!(promoted.contains(&format!("serving {weak}")), "{promoted}");
    assert_eq!(current(&root)["model_id"], weak.as_str());
    assert_eq!(current(&root)["action"], "promoted");
    let rolled_back = stdout(&lambda_vision(&endpoint, &["models", "rollback"]));
    assert!(
        rolled_back.contains(&format!("serving {job}")),
        "{rolled_back}"
    );
    assert_eq!(current(&root)["model_id"], job.as_str());
    assert_eq!(current(&root)["sequence"], 5);

    // A version trained on another backbone is refused.
    let head_path = root
        .join(RESULTS_BUCKET)
        .join(format!("models/{weak}/head.json"));
    let mut head: Value = serde_json::from_slice(&std::fs::read(&head_path).unwrap()).unwrap();
    head["backbone_sha256"] = Value::from("0".repeat(64));
    let other = root
        .join(RESULTS_BUCKET)
        .join("models/other-backbone/head.json");
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::fs::write(&other, serde_json::to_vec(&head).unwrap()).unwrap();
    refused(
        &lambda_vision(&endpoint, &["models", "promote", "other-backbone"]),
        "trained on backbone 000000000000",
    );
    assert_eq!(current(&root)["model_id"], job.as_str());

    // The review queue, least confident first.
    let review = stdout(&lambda_vision(&endpoint, &["review", "list"]));
    let scores: Vec<f64> = review
        .lines()
        .skip(2)
        .map(|line| line.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(!scores.is_empty(), "{review}");
    assert!(scores.windows(2).all(|w| w[0] <= w[1]), "{review}");
    drop(server);
}
