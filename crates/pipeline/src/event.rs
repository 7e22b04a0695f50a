//! S3 event notifications → work items. The functions take `aws_lambda_events`' S3 event, the
//! type Lambda's own Rust tooling defines; this module turns its records into decoded objects
//! and keeps the notification rules of `template.yaml`.

pub use aws_lambda_events::event::s3::S3Event;

use crate::layout;

/// One object that was created, with its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    pub bucket: String,
    pub key: String,
    pub size: Option<u64>,
    /// Bare, without the quotes S3 responses put around it (events normally carry it bare).
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
}

/// The created objects of `event`; other event types (deletes, restores) are dropped. A record
/// without a bucket or key, or whose key does not decode to UTF-8, is an error of its own.
pub fn created_objects(event: &S3Event) -> Vec<Result<CreatedObject, String>> {
    event
        .records
        .iter()
        .filter(|r| {
            r.event_name
                .as_deref()
                .is_some_and(|name| name.starts_with("ObjectCreated:"))
        })
        .map(|r| {
            let bucket =
                r.s3.bucket
                    .name
                    .clone()
                    .ok_or("a record without a bucket name")?;
            let raw_key =
                r.s3.object
                    .key
                    .as_deref()
                    .ok_or("a record without an object key")?;
            Ok(CreatedObject {
                bucket,
                key: decode_key(raw_key)?,
                size: r.s3.object.size.and_then(|size| u64::try_from(size).ok()),
                etag: r.s3.object.e_tag.as_deref().map(unquote),
                version_id: r.s3.object.version_id.clone(),
                sequencer: r.s3.object.sequencer.clone(),
            })
        })
        .collect()
}

/// Parses a notification that a relay (the moto tests) received from an S3-compatible
/// server rather than from Lambda. Such servers (moto among them) omit `userIdentity` and
/// `requestParameters`, which S3 always sends and `aws_lambda_events` requires; they are filled
/// in empty here, at the relay, so the functions' input type stays as strict as Lambda's.
/// `None` for the `s3:TestEvent` a server sends when notifications are configured.
pub fn relayed_event(mut value: serde_json::Value) -> Result<Option<S3Event>, serde_json::Error> {
    let Some(records) = value.get_mut("Records").and_then(|r| r.as_array_mut()) else {
        return Ok(None);
    };
    for record in records.iter_mut().filter_map(|r| r.as_object_mut()) {
        for section in ["userIdentity", "requestParameters"] {
            record
                .entry(section)
                .or_insert_with(|| serde_json::json!({}));
        }
    }
    serde_json::from_value(value).map(Some)
}

/// The Lambda function an S3 notification goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    UploadTrigger,
    Trainer,
    Notifier,
}

/// Which bucket of the stack a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketRole {
    Input,
    Results,
}

/// One S3 event notification rule of `template.yaml`: `s3:ObjectCreated:*` on keys with this
/// prefix and suffix goes to `function`. Kept here, next to the code that writes the keys, so
/// a test can check the template against it and the demo can deliver events by the same rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotificationRule {
    /// The event's logical name in the template.
    pub name: &'static str,
    pub bucket: BucketRole,
    pub prefix: &'static str,
    pub suffix: &'static str,
    pub function: Function,
}

/// Every notification the stack configures.
pub const NOTIFICATION_RULES: [NotificationRule; 3] = [
    NotificationRule {
        name: "ImageUploaded",
        bucket: BucketRole::Input,
        prefix: layout::IMAGES_PREFIX,
        suffix: "",
        function: Function::UploadTrigger,
    },
    NotificationRule {
        name: "JobSubmitted",
        bucket: BucketRole::Input,
        prefix: layout::JOBS_PREFIX,
        suffix: layout::JSON_SUFFIX,
        function: Function::UploadTrigger,
    },
    NotificationRule {
        name: "ResultWritten",
        bucket: BucketRole::Results,
        prefix: layout::RESULTS_PREFIX,
        suffix: layout::JSON_SUFFIX,
        function: Function::Notifier,
    },
];

/// The function S3 would notify for a new object `key` in a bucket of role `bucket`, if any.
pub fn notified_function(bucket: BucketRole, key: &str) -> Option<Function> {
    NOTIFICATION_RULES
        .iter()
        .find(|rule| {
            rule.bucket == bucket && key.starts_with(rule.prefix) && key.ends_with(rule.suffix)
        })
        .map(|rule| rule.function)
}

/// An `ObjectCreated:Put` event exactly as S3 delivers it to Lambda (event version 2.1, key
/// form-URL-encoded). The demo uses it to stand in for S3 notifications, which local S3
/// servers lack.
pub fn object_created_event(
    region: &str,
    bucket: &str,
    key: &str,
    size: u64,
    etag: &str,
    sequencer: u64,
) -> serde_json::Value {
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": region,
            "eventTime": crate::clock::now_rfc3339(),
            "eventName": "ObjectCreated:Put",
            "userIdentity": { "principalId": "AWS:LAMBDAVISIONDEMO" },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": {
                "x-amz-request-id": format!("{sequencer:016X}"),
                "x-amz-id-2": "lambda-vision-demo"
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "lambda-vision-demo",
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": { "principalId": "LAMBDAVISIONDEMO" },
                    "arn": format!("arn:aws:s3:::{bucket}")
                },
                "object": {
                    "key": encode_key(key),
                    "size": size,
                    "eTag": unquote(etag),
                    "sequencer": format!("{sequencer:016X}")
                }
            }
        }]
    })
}

/// An ETag without quotes: S3 responses quote it, events do not; documents store it bare.
pub fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// The inverse of [`decode_key`]: S3 form-encodes keys in events (space → `+`, `/` kept).
pub fn encode_key(key: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'*')
        .remove(b' ');
    percent_encoding::utf8_percent_encode(key, KEEP)
        .to_string()
        .replace(' ', "+")
}

/// S3 event keys are form-URL-encoded: `+` is a space and `%XX` a byte (`%2F` a slash).
pub fn decode_key(key: &str) -> Result<String, String> {
    let plus_decoded = key.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_decoded)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| format!("object key {key:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(
            decode_key("images/summer+holiday/caf%C3%A9+%C3%A0+Paris.jpg").unwrap(),
            "images/summer holiday/café à Paris.jpg"
        );
        assert_eq!(decode_key("images%2Fa.jpg").unwrap(), "images/a.jpg");
        assert_eq!(decode_key("a%2Bb.jpg").unwrap(), "a+b.jpg");
        assert!(decode_key("bad%FF.jpg").is_err());
    }

    #[test]
    fn encoded_keys_decode_back() {
        for key in [
            "images/summer holiday/café à Paris.jpg",
            "images/a+b%c.jpg",
            "jobs/x.json",
        ] {
            assert_eq!(decode_key(&encode_key(key)).unwrap(), key);
        }
        assert_eq!(encode_key("images/a b+c.jpg"), "images/a+b%2Bc.jpg");
    }

    #[test]
    fn generated_events_parse_like_real_ones() {
        let event = object_created_event("us-east-1", "in", "images/a b.jpg", 42, "\"abc\"", 7);
        let event: S3Event = serde_json::from_value(event).unwrap();
        let objects = created_objects(&event);
        let object = objects[0].as_ref().unwrap();
        assert_eq!(object.key, "images/a b.jpg");
        assert_eq!(object.size, Some(42));
        assert_eq!(object.etag.as_deref(), Some("abc"));
    }

    #[test]
    fn rules_route_by_bucket_prefix_and_suffix() {
        use BucketRole::*;
        assert_eq!(
            notified_function(Input, "images/x.png"),
            Some(Function::UploadTrigger)
        );
        assert_eq!(
            notified_function(Input, "jobs/a.json"),
            Some(Function::UploadTrigger)
        );
        assert_eq!(notified_function(Input, "jobs/a.yaml"), None);
        assert_eq!(notified_function(Input, "datasets/d/l/x.png"), None);
        assert_eq!(
            notified_function(Results, "results/a.json"),
            Some(Function::Notifier)
        );
        assert_eq!(notified_function(Results, "images/x.png"), None);
        assert_eq!(
            notified_function(Results, "predictions/images/x.png.json"),
            None
        );
    }

    #[test]
    fn relays_fill_in_what_local_servers_omit_and_drop_test_events() {
        let moto_style = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
            "eventTime":"2026-12-05T10:00:00.000Z",
            "s3":{"bucket":{"name":"in"},"object":{"key":"images%2Fa.jpg","size":12}}}]}"#;
        // The functions' own input type refuses it, as Lambda's runtime would...
        assert!(serde_json::from_str::<S3Event>(moto_style).is_err());
        // ...and the relay completes it.
        let event = relayed_event(serde_json::from_str(moto_style).unwrap())
            .unwrap()
            .unwrap();
        let objects = created_objects(&event);
        assert_eq!(objects[0].as_ref().unwrap().key, "images/a.jpg");
        let test_event =
            serde_json::json!({"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"in"});
        assert!(relayed_event(test_event).unwrap().is_none());
    }

    #[test]
    fn records_without_a_key_are_errors_of_their_own() {
        let mut event = object_created_event("us-east-1", "in", "images/a.jpg", 1, "e", 1);
        let second = event["Records"][0].clone();
        event["Records"].as_array_mut().unwrap().push(second);
        event["Records"][0]["s3"]["object"]
            .as_object_mut()
            .unwrap()
            .remove("key");
        let event: S3Event = serde_json::from_value(event).unwrap();
        let objects = created_objects(&event);
        assert!(objects[0].is_err());
        assert_eq!(objects[1].as_ref().unwrap().key, "images/a.jpg");
    }
}
