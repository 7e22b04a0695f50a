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
