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
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        let s3_events: Vec<_> = events
            .iter()
            .filter(|(_, event)| event["Type"].as_str() == Some("S3"))
            .collect();
        if s3_events.is_empty() {
            continue;
        }
        let function = match name.as_str() {
            Some("UploadTriggerFunction") => Function::UploadTrigger,
            Some("TrainerFunction") => Function::Trainer,
            Some("NotifierFunction") => Function::Notifier,
            other => panic!("unexpected function with S3 events {other:?}"),
        };
        for (event_name, event) in s3_events {
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

/// Lambda's own triggers cannot loop either: what the upload trigger and the trainer give up
/// on goes to the failure recorder, which writes no key that notifies it (it has no S3 events)
/// and whose own failures go to the dead-letter queue, never back to a function.
#[test]
fn given_up_invocations_reach_the_failure_recorder_which_never_reaches_itself() {
    let template = template();
    let resources = template["Resources"].as_mapping().expect("Resources");
    let destination = |function: &str| {
        let on_failure = &resources[function]["Properties"]["EventInvokeConfig"]["DestinationConfig"]
            ["OnFailure"];
        let target = match &on_failure["Destination"] {
            Value::Tagged(tagged) => match &tagged.value {
                Value::String(text) => text.split('.').next().unwrap_or_default().to_owned(),
                Value::Sequence(parts) => parts[0].as_str().unwrap_or_default().to_owned(),
                other => panic!("{function}: destination {other:?}"),
            },
            other => panic!("{function}: destination {other:?}"),
        };
        (
            on_failure["Type"].as_str().unwrap_or_default().to_owned(),
            target,
        )
    };
    for function in ["UploadTriggerFunction", "TrainerFunction"] {
        assert_eq!(
            destination(function),
            ("Lambda".to_owned(), "FailureRecorderFunction".to_owned()),
            "{function}"
        );
    }
    for function in ["FailureRecorderFunction", "NotifierFunction"] {
        assert_eq!(
            destination(function),
            ("SQS".to_owned(), "DeadLetterQueue".to_owned()),
            "{function}"
        );
    }
    // Its only events are the training state machine's ended executions: no S3 trigger.
    let events = resources["FailureRecorderFunction"]["Properties"]["Events"]
        .as_mapping()
        .map(|events| events.values().cloned().collect::<Vec<_>>())
        .unwrap_or_default();
    for event in &events {
        assert_eq!(
            event["Type"].as_str(),
            Some("EventBridgeRule"),
            "the failure recorder must not be triggered by S3: {event:?}"
        );
        let pattern = &event["Properties"]["Pattern"];
        assert_eq!(strings(&pattern["source"]), ["aws.states"]);
        let machine = strings(&pattern["detail"]["stateMachineArn"]).concat();
        assert!(
            machine.ends_with(":stateMachine:${AWS::StackName}-training"),
            "{machine}"
        );
    }
}

/// Every `Statement` of every function policy, as (function, statement).
fn function_statements(template: &Value) -> Vec<(String, Value)> {
    let mut statements = Vec::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let name = name.as_str().unwrap().to_owned();
        let policies = resource["Properties"]["Policies"]
            .as_sequence()
            .unwrap_or_else(|| panic!("{name} has no inline policies"));
        for policy in policies {
            let policy_statements = policy["Statement"].as_sequence().unwrap_or_else(|| {
                panic!("{name}: only inline policy documents, no managed policies")
            });
            for statement in policy_statements {
                statements.push((name.clone(), statement.clone()));
            }
        }
    }
    statements
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::Sequence(items) => items.iter().flat_map(strings).collect(),
        Value::String(text) => vec![text.clone()],
        Value::Tagged(tagged) => strings(&tagged.value),
        _ => Vec::new(),
    }
}

#[test]
fn function_policies_name_every_action_and_resource() {
    let template = template();
    let statements = function_statements(&template);
    assert!(statements.len() >= 10, "policies were not found");
    for (function, statement) in &statements {
        assert_eq!(statement["Effect"].as_str(), Some("Allow"), "{function}");
        let actions = strings(&statement["Action"]);
        assert!(!actions.is_empty(), "{function}: {statement:?}");
        for action in &actions {
            assert!(
                !action.contains('*'),
                "{function}: wildcard action {action}"
            );
            assert!(
                action.starts_with("s3:")
                    || action.starts_with("lambda:")
                    || action.starts_with("ses:")
                    || (function == "TrainerFunction" && action == "states:StartExecution"),
                "{function}: unexpected action {action}"
            );
        }
        let resources = strings(&statement["Resource"]);
        assert!(
            !resources.is_empty(),
            "{function}: no resource: {statement:?}"
        );
        for resource in &resources {
            // Object-key scopes (`bucket/prefix/*`) are allowed; a bare or service-wide `*` is not.
            assert!(
                resource.starts_with("arn:"),
                "{function}: resource {resource}"
            );
            let after_service = resource.splitn(6, ':').nth(5).unwrap_or_default();
            assert!(
                !after_service.is_empty()
                    && after_service != "*"
                    && !after_service.starts_with("*"),
                "{function}: wildcard resource {resource}"
            );
            if let Some((_, key)) = after_service.split_once('/') {
                assert!(
                    key.is_empty() || (key.len() > 1 && !key.starts_with('*')),
                    "{function}: whole-bucket object scope {resource}"
                );
            }
        }
        if actions.iter().any(|a| a.starts_with("ses:")) {
            assert!(
                !statement["Condition"]["StringEquals"]["ses:FromAddress"].is_null(),
                "{function}: SendEmail must be pinned to the sender address"
            );
        }
    }
}

#[test]
fn buckets_are_encrypted_private_and_tls_only() {
    let template = template();
    let resources = &template["Resources"];
    for (bucket, policy) in [
        ("InputBucket", "InputBucketPolicy"),
        ("ResultsBucket", "ResultsBucketPolicy"),
    ] {
        let properties = &resources[bucket]["Properties"];
        let encryption = &properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
        let algorithm = encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"].as_str();
        assert!(
            matches!(algorithm, Some("AES256" | "aws:kms")),
            "{bucket}: {algorithm:?}"
        );
        let block = &properties["PublicAccessBlockConfiguration"];
        for setting in [
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        ] {
            assert_eq!(block[setting].as_bool(), Some(true), "{bucket}: {setting}");
        }
        assert_eq!(
            properties["OwnershipControls"]["Rules"][0]["ObjectOwnership"].as_str(),
            Some("BucketOwnerEnforced"),
            "{bucket}: ACLs must be disabled"
        );
        let policy = &resources[policy]["Properties"];
        assert_eq!(untag(&policy["Bucket"]), Some(bucket));
        let statements = policy["PolicyDocument"]["Statement"].as_sequence().unwrap();
        let tls = statements
            .iter()
            .find(|s| {
                s["Effect"].as_str() == Some("Deny")
                    && !s["Condition"]["Bool"]["aws:SecureTransport"].is_null()
            })
            .unwrap_or_else(|| panic!("{bucket}: no TLS-only statement"));
        assert_eq!(
            tls["Condition"]["Bool"]["aws:SecureTransport"].as_str(),
            Some("false")
        );
        assert_eq!(tls["Principal"].as_str(), Some("*"));
        let actions = strings(&tls["Action"]);
        for action in [
            "s3:GetObject",
            "s3:PutObject",
            "s3:ListBucket",
            "s3:DeleteObject",
        ] {
            assert!(
                actions.iter().any(|a| a == action),
                "{bucket}: TLS rule misses {action}"
            );
        }
        let resources = strings(&tls["Resource"]);
        assert_eq!(resources.len(), 2, "{bucket}: the bucket and its objects");
    }
}

/// The state machine's role: the trainer and its own Map children only; `*` only for the
/// CloudWatch Logs delivery actions, which take no resource. The trainer starts exactly this
/// state machine, by the name the template gives it.
#[test]
fn the_state_machine_is_least_privilege_and_the_trainer_knows_its_arn() {
    let template = template();
    let machine = &template["Resources"]["TrainingStateMachine"]["Properties"];
    assert_eq!(machine["Type"].as_str(), Some("STANDARD"));
    assert_eq!(
        machine["DefinitionUri"].as_str(),
        Some("statemachine/training.asl.json")
    );
    assert!(!machine["Logging"]["Destinations"].is_null(), "logging");
    let name = strings(&machine["Name"]).concat();
    assert_eq!(name, "${AWS::StackName}-training");
    let policies = machine["Policies"].as_sequence().expect("inline policies");
    for policy in policies {
        for statement in policy["Statement"].as_sequence().expect("statements") {
            let actions = strings(&statement["Action"]);
            let resources = strings(&statement["Resource"]);
            for action in &actions {
                assert!(!action.contains('*'), "wildcard action {action}");
            }
            if resources.iter().any(|r| r == "*") {
                assert!(
                    actions.iter().all(|a| a.starts_with("logs:")),
                    "only log delivery may name every resource: {actions:?}"
                );
                continue;
            }
            for resource in &resources {
                assert!(
                    resource == "TrainerFunction.Arn"
                        || resource.contains("${AWS::StackName}-training")
                        || resource
                            .contains("-results-${AWS::AccountId}-${AWS::Region}/checkpoints/"),
                    "{resource}"
                );
            }
        }
    }
    let trainer = &template["Resources"]["TrainerFunction"]["Properties"];
    let arn = strings(&trainer["Environment"]["Variables"]["STATE_MACHINE_ARN"]).concat();
    assert!(
        arn.ends_with(":stateMachine:${AWS::StackName}-training"),
        "{arn}"
    );
    assert!(
        !trainer["Environment"]["Variables"]["MAP_THRESHOLD_IMAGES"].is_null(),
        "the threshold is a template parameter"
    );
}
