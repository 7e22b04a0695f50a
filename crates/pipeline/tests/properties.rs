//! Property tests for everything the pipeline parses from outside: S3 events, their keys, and
//! job specs. None may panic; valid input must round-trip; invalid input must name its field.

use pipeline::S3Event;
use pipeline::documents::JobSpec;
use pipeline::event::{created_objects, decode_key, encode_key, object_created_event};
use proptest::prelude::*;
use serde_json::{Value, json};

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::from),
        prop_oneof![
            Just("Records"),
            Just("s3"),
            Just("object"),
            Just("key"),
            Just("bucket"),
            Just("name"),
            Just("eventName")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("Records".to_owned()),
                    Just("s3".to_owned()),
                    Just("object".to_owned()),
                    Just("key".to_owned()),
                    Just("bucket".to_owned()),
                    Just("name".to_owned()),
                    Just("eventName".to_owned()),
                    Just("size".to_owned()),
                    Just("eTag".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn keys_round_trip_through_event_encoding(key in "\\PC{0,64}") {
        prop_assert_eq!(decode_key(&encode_key(&key)).unwrap(), key);
    }

    #[test]
    fn decoding_any_key_never_panics(key in "[%+a-zA-Z0-9/]{0,32}|\\PC{0,32}") {
        let _ = decode_key(&key);
    }

    #[test]
    fn any_json_as_an_s3_event_never_panics(value in arbitrary_json()) {
        if let Ok(event) = serde_json::from_value::<S3Event>(value) {
            for object in created_objects(&event) {
                let _ = object;
            }
        }
    }

    #[test]
    fn generated_events_give_back_bucket_key_size_and_etag(
        key in "\\PC{1,64}", size in 0..=i64::MAX as u64, etag in "[0-9a-f]{32}", sequencer in any::<u64>(),
    ) {
        let event: S3Event = serde_json::from_value(object_created_event("eu-west-1", "in", &key, size, &format!("\"{etag}\""), sequencer)).unwrap();
        let objects = created_objects(&event);
        prop_assert_eq!(objects.len(), 1);
        let object = objects[0].as_ref().unwrap();
        prop_assert_eq!(&object.key, &key);
        prop_assert_eq!(object.size, Some(size));
        prop_assert_eq!(object.etag.as_deref(), Some(etag.as_str()));
    }

    #[test]
    fn any_bytes_as_a_job_spec_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(error) = JobSpec::parse(&bytes) {
            prop_assert!(!error.to_string().is_empty());
        }
    }

    #[test]
    fn specs_are_accepted_exactly_when_every_field_is_in_range(
        folds in 0usize..25,
        max_iterations in 0usize..12_000,
        penalty in -0.5f64..150.0,
        validation_split in -0.1f32..0.7,
        input_size in 64u32..600,
        recipients in 0usize..13,
    ) {
        let spec = json!({
            "dataset": "pets",
            "folds": folds,
            "max_iterations": max_iterations,
            "penalties": [0.01, penalty],
            "validation_split": validation_split,
            "input_size": input_size,
            "notify": (0..recipients).map(|i| format!("owner{i}@example.com")).collect::<Vec<_>>(),
        });
        let fields_in_range = [
            ("folds", (2..=20).contains(&folds)),
            ("max_iterations", (10..=10_000).contains(&max_iterations)),
            ("penalties", penalty > 0.0 && penalty <= 100.0),
            ("validation_split", (0.0..=0.5).contains(&validation_split)),
            ("input_size", (96..=512).contains(&input_size) && input_size % 32 == 0),
            ("notify", recipients <= 10),
        ];
        match JobSpec::parse(spec.to_string().as_bytes()) {
            Ok(_) => prop_assert!(fields_in_range.iter().all(|(_, ok)| *ok), "{spec}"),
            Err(error) => {
                let message = error.to_string();
                prop_assert!(
                    fields_in_range.iter().any(|(field, ok)| !ok && message.contains(&format!("`{field}`"))),
                    "{spec} → {message}"
                );
            }
        }
    }
}
