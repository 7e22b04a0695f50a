//! The step inputs, outputs and caught errors, without AWS.

use super::*;

#[test]
fn inputs_are_told_apart_by_their_step() {
    let job: TrainerInput = serde_json::from_str(r#"{"job_id": "j1", "continuation": 2}"#).unwrap();
    assert_eq!(
        job,
        TrainerInput::Job(TrainerEvent {
            job_id: "j1".to_owned(),
            continuation: 2
        })
    );
    let extract: TrainerInput = serde_json::from_str(
        r#"{"step": "extract", "job_id": "j1", "shard": "checkpoints/j1/shards/00000.json"}"#,
    )
    .unwrap();
    assert_eq!(
        extract,
        TrainerInput::Step(MapStep::Extract {
            job_id: "j1".to_owned(),
            shard: "checkpoints/j1/shards/00000.json".to_owned()
        })
    );
    let fail: TrainerInput = serde_json::from_str(
        r#"{"step": "fail", "job_id": "j1", "error": {"Error": "S3", "Cause": "x"}}"#,
    )
    .unwrap();
    assert!(matches!(fail, TrainerInput::Step(MapStep::Fail { .. })));
    let unknown =
        serde_json::from_str::<TrainerInput>(r#"{"step": "publish", "job_id": "j"}"#).unwrap_err();
    assert!(unknown.to_string().contains("publish"), "{unknown}");
    let stray =
        serde_json::from_str::<TrainerInput>(r#"{"step": "train", "job_id": "j", "shard": "x"}"#)
            .unwrap_err();
    assert!(stray.to_string().contains("shard"), "{stray}");
}

#[test]
fn a_functions_own_error_keeps_its_kind_and_anything_else_is_named() {
    let own = caught_error(&StepError {
        error: "FeaturesMissing".to_owned(),
        cause: r#"{"errorType":"FeaturesMissing","errorMessage":"3 of the dataset's 9 images have no cached features"}"#.to_owned(),
    });
    assert_eq!(own.kind, "features_missing");
    assert!(
        own.message.starts_with("3 of the dataset's 9"),
        "{}",
        own.message
    );
    let throttled = caught_error(&StepError {
        error: "Lambda.TooManyRequestsException".to_owned(),
        cause: "Rate exceeded".to_owned(),
    });
    assert_eq!(throttled.kind, "step_failed");
    assert!(
        throttled
            .message
            .contains("Lambda.TooManyRequestsException: Rate exceeded"),
        "{}",
        throttled.message
    );
    let out_of_memory = caught_error(&StepError {
        error: "Runtime.OutOfMemory".to_owned(),
        cause: r#"{"errorType":"Runtime.OutOfMemory","errorMessage":"signal: killed"}"#.to_owned(),
    });
    assert_eq!(
        out_of_memory.kind, "step_failed",
        "not runtime._out_of_memory"
    );
    assert!(
        out_of_memory
            .message
            .contains("Runtime.OutOfMemory: signal: killed")
            && out_of_memory.message.contains("TrainerMemory"),
        "{}",
        out_of_memory.message
    );
    assert_eq!(snake_case("S3"), "s3");
    assert_eq!(snake_case("ContinuationLimit"), "continuation_limit");
}

#[test]
fn outputs_have_the_fields_the_state_machine_reads() {
    let prepared = StepOutput::Prepared {
        job_id: "j".to_owned(),
        status: "ready",
        images: 9,
        cached: 1,
        shards: 2,
        manifest: ManifestLocation {
            bucket: "b".to_owned(),
            key: layout::shard_manifest_key("j"),
        },
    };
    let json = serde_json::to_value(&prepared).unwrap();
    assert_eq!(json["status"], "ready");
    assert_eq!(json["manifest"]["bucket"], "b");
    assert_eq!(json["manifest"]["key"], "checkpoints/j/shards.csv");
    assert_eq!(json["shards"], 2);
}
