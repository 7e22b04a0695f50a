//! S3 event notifications → work items. Our own small serde types rather than
//! `aws_lambda_events`' S3 event: those require `userIdentity` and `requestParameters`, which
//! some S3-compatible servers (and moto) omit, and we need only the bucket, key, size and ETag.

use serde::Deserialize;

/// The event a Lambda function receives from S3 (possibly several records).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct S3Event {
    #[serde(rename = "Records", default)]
    pub records: Vec<S3EventRecord>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3EventRecord {
    #[serde(default)]
    pub event_name: String,
    #[serde(default)]
    pub event_time: String,
    pub s3: S3Entity,
}

#[derive(Debug, Clone, Deserialize)]
pub struct S3Entity {
    pub bucket: S3Bucket,
    pub object: S3Object,
}

#[derive(Debug, Clone, Deserialize)]
pub struct S3Bucket {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Object {
    /// URL-encoded, as S3 sends it (`+` for spaces).
    pub key: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default, rename = "eTag")]
    pub etag: Option<String>,
    #[serde(default)]
    pub version_id: Option<String>,
    #[serde(default)]
    pub sequencer: Option<String>,
}

/// One object that was created, with its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedObject {
    pub bucket: String,
    pub key: String,
    pub size: Option<u64>,
    pub etag: Option<String>,
    pub version_id: Option<String>,
    pub sequencer: Option<String>,
}

impl S3Event {
    /// The created objects of this event; other event types (deletes, `s3:TestEvent`) are
    /// dropped. Keys that do not decode to UTF-8 are returned as errors, per record.
    pub fn created_objects(&self) -> Vec<Result<CreatedObject, String>> {
        self.records
            .iter()
            .filter(|r| r.event_name.starts_with("ObjectCreated:"))
            .map(|r| {
                let key = decode_key(&r.s3.object.key)?;
                Ok(CreatedObject {
                    bucket: r.s3.bucket.name.clone(),
                    key,
                    size: r.s3.object.size,
                    etag: r.s3.object.etag.clone(),
                    version_id: r.s3.object.version_id.clone(),
                    sequencer: r.s3.object.sequencer.clone(),
                })
            })
            .collect()
    }
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
        prefix: "images/",
        suffix: "",
        function: Function::UploadTrigger,
    },
    NotificationRule {
        name: "JobSubmitted",
        bucket: BucketRole::Input,
        prefix: "jobs/",
        suffix: ".json",
        function: Function::UploadTrigger,
    },
    NotificationRule {
        name: "ResultWritten",
        bucket: BucketRole::Results,
        prefix: "results/",
        suffix: ".json",
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
            "eventTime": crate::now_rfc3339(),
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
                    "eTag": etag.trim_matches('"'),
                    "sequencer": format!("{sequencer:016X}")
                }
            }
        }]
    })
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
        let objects = event.created_objects();
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
    fn tolerates_missing_optional_sections_and_test_events() {
        let moto_style = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put",
            "s3":{"bucket":{"name":"in"},"object":{"key":"images%2Fa.jpg","size":12}}}]}"#;
        let event: S3Event = serde_json::from_str(moto_style).unwrap();
        let objects = event.created_objects();
        assert_eq!(objects[0].as_ref().unwrap().key, "images/a.jpg");
        let test_event: S3Event =
            serde_json::from_str(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"in"}"#)
                .unwrap();
        assert!(test_event.created_objects().is_empty());
    }
}
