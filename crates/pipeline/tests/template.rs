//! `template.yaml` and the code agree: the S3 notifications the stack configures are exactly
//! `NOTIFICATION_RULES`, which the demo uses to deliver events.

use pipeline::event::{BucketRole, Function, NOTIFICATION_RULES, NotificationRule};
use serde_yaml::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
    let text = std::fs::read_to_string(path).expect("template.yaml is readable");
    serde_yaml::from_str(&text).expect("template.yaml is YAML")
}

/// The string inside a tag such as `!Ref InputBucket`.
fn untag(value: &Value) -> Option<&str> {
    match value {
        Value::Tagged(tagged) => tagged.value.as_str(),
        other => other.as_str(),
    }
}

#[test]
fn s3_notifications_match_the_rules_in_code() {
    let template = template();
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut found = Vec::new();
    for (name, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let function = match name.as_str() {
            Some("UploadTriggerFunction") => Function::UploadTrigger,
            Some("TrainerFunction") => Function::Trainer,
            Some("NotifierFunction") => Function::Notifier,
            other => panic!("unexpected function {other:?}"),
        };
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for (event_name, event) in events {
            assert_eq!(event["Type"].as_str(), Some("S3"), "{event_name:?}");
            let properties = &event["Properties"];
            assert_eq!(properties["Events"].as_str(), Some("s3:ObjectCreated:*"));
            let bucket = match untag(&properties["Bucket"]) {
                Some("InputBucket") => BucketRole::Input,
                Some("ResultsBucket") => BucketRole::Results,
                other => panic!("unexpected bucket {other:?}"),
            };
            let rules = properties["Filter"]["S3Key"]["Rules"]
                .as_sequence()
                .expect("every notification is filtered");
            let rule = |wanted: &str| {
                rules
                    .iter()
                    .find(|r| r["Name"].as_str() == Some(wanted))
                    .and_then(|r| r["Value"].as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            found.push((
                event_name.as_str().unwrap_or_default().to_owned(),
                bucket,
                rule("prefix"),
                rule("suffix"),
                function,
            ));
        }
    }
    let expected: Vec<_> = NOTIFICATION_RULES
        .iter()
        .map(
            |&NotificationRule {
                 name,
                 bucket,
                 prefix,
                 suffix,
                 function,
             }| {
                (
                    name.to_owned(),
                    bucket,
                    prefix.to_owned(),
                    suffix.to_owned(),
                    function,
                )
            },
        )
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(found, expected_sorted);
}
