//! S3 access over `aws-sdk-s3`: the handful of operations the pipeline needs, with errors mapped
//! to [`PipelineError`] (missing keys and lost conditional-write races become values, not
//! failures) and the SDK's standard retries with backoff. Documents go in and out as their
//! types (`get_json`, `put_json_if_absent`, …), so handlers never touch bytes or content types
//! for them.

use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use futures::stream::{self, Stream, StreamExt};

use crate::documents::Document;
use crate::error::{PipelineError, Result};

/// The content type of every JSON object the pipeline writes.
pub const JSON_CONTENT_TYPE: &str = "application/json";

/// An object's bytes and its ETag (quotes included, as S3 returns it).
#[derive(Debug, Clone)]
pub struct Object {
    pub bytes: Vec<u8>,
    pub etag: Option<String>,
}

/// A document as read, with the ETag a conditional write back needs.
#[derive(Debug, Clone)]
pub struct Stored<T> {
    pub document: T,
    pub etag: Option<String>,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// An object this store has just written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    pub bucket: String,
    pub key: String,
    pub size: u64,
    pub etag: String,
}

/// The S3 client the pipeline uses; cheap to clone.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    written: Option<tokio::sync::mpsc::UnboundedSender<WrittenObject>>,
}

/// Loads the AWS configuration from the environment (credentials, region and
/// `AWS_ENDPOINT_URL*` overrides) with standard retries: up to 5 attempts with jittered backoff.
pub async fn load_aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5))
        .load()
        .await
}

impl S3Store {
    /// A store for `config`. Any endpoint override (moto, s3s, MinIO) gets path-style
    /// addressing, since local servers cannot serve `bucket.host` names.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
        let overridden = config.endpoint_url().is_some()
            || set("AWS_ENDPOINT_URL_S3")
            || set("AWS_ENDPOINT_URL");
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(overridden)
            .build();
        S3Store {
            client: Client::from_conf(s3_config),
            written: None,
        }
    }

    /// Also reports every successful write to `sink`. The demo turns these into S3 event
    /// notifications, which local S3 servers do not send; in Lambda, S3 itself does.
    pub fn reporting_writes_to(
        mut self,
        sink: tokio::sync::mpsc::UnboundedSender<WrittenObject>,
    ) -> Self {
        self.written = Some(sink);
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reads a whole object.
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Object> {
        self.get_object(bucket, key, None).await
    }

    /// Reads an object, or `None` when it does not exist.
    pub async fn get_if_exists(&self, bucket: &str, key: &str) -> Result<Option<Object>> {
        match self.get(bucket, key).await {
            Ok(object) => Ok(Some(object)),
            Err(PipelineError::NotFound { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Reads the object only while it is still the version with `etag` (`If-Match`): `None`
    /// when a newer version has replaced it, so a late event never reads another version's
    /// bytes.
    pub async fn get_if_match(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
    ) -> Result<Option<Object>> {
        let quoted = format!("\"{}\"", crate::event::unquote(etag));
        match self.get_object(bucket, key, Some(&quoted)).await {
            Ok(object) => Ok(Some(object)),
            Err(PipelineError::Changed { .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn get_object(&self, bucket: &str, key: &str, if_match: Option<&str>) -> Result<Object> {
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await
            .map_err(|e| s3_error("GetObject", bucket, key, e))?;
        let etag = output.e_tag().map(str::to_owned);
        let bytes = output.body.collect().await.map_err(|e| PipelineError::S3 {
            operation: "GetObject",
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message: format!("reading the body failed: {e}"),
        })?;
        Ok(Object {
            bytes: bytes.into_bytes().to_vec(),
            etag,
        })
    }

    /// Writes an object unconditionally; returns its ETag.
    pub async fn put(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<Option<String>> {
        self.put_conditionally(bucket, key, bytes, content_type, Condition::None)
            .await
    }

    /// Writes only if the key does not exist yet (`If-None-Match: *`); `Ok(false)` when it did.
    pub async fn put_if_absent(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<bool> {
        match self
            .put_conditionally(bucket, key, bytes, content_type, Condition::Absent)
            .await
        {
            Ok(_) => Ok(true),
            Err(PipelineError::AlreadyExists { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Replaces the object only if it still has `etag` (`If-Match`); `Ok(false)` when it changed.
    pub async fn put_if_match(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        etag: &str,
    ) -> Result<bool> {
        match self
            .put_conditionally(bucket, key, bytes, content_type, Condition::Matches(etag))
            .await
        {
            Ok(_) => Ok(true),
            Err(PipelineError::AlreadyExists { .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    async fn put_conditionally(
        &self,
        bucket: &str,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
        condition: Condition<'_>,
    ) -> Result<Option<String>> {
        let size = bytes.len();
        let mut request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes));
        let size = size as u64;
        request = match condition {
            Condition::None => request,
            Condition::Absent => request.if_none_match("*"),
            Condition::Matches(etag) => request.if_match(etag),
        };
        let output = request
            .send()
            .await
            .map_err(|e| s3_error("PutObject", bucket, key, e))?;
        if let Some(sink) = &self.written {
            // A closed sink means nobody listens any more; the write itself succeeded.
            let _ = sink.send(WrittenObject {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size,
                etag: output.e_tag().unwrap_or_default().to_owned(),
            });
        }
        Ok(output.e_tag().map(str::to_owned))
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("DeleteObject", bucket, key, e))?;
        Ok(())
    }

    /// Every object under `prefix`, following continuation tokens, sorted by key.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ListedObject>> {
        self.list_at_most(bucket, prefix, usize::MAX, |_| true)
            .await
    }

    /// The objects under `prefix` whose keys `keep` takes, as [`S3Store::list`], but it stops
    /// paging once it has more than `limit` of them: a caller that refuses more than `limit`
    /// learns so without listing (and holding) a whole bucket. Past the limit the listing is
    /// returned as it stands, without the ETags it lacks.
    pub async fn list_at_most(
        &self,
        bucket: &str,
        prefix: &str,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<ListedObject>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_error("ListObjectsV2", bucket, prefix, e))?;
            for object in page.contents() {
                if let Some(key) = object.key().filter(|key| keep(key)) {
                    objects.push(ListedObject {
                        key: key.to_owned(),
                        size: object.size().map_or(0, |s| s.max(0) as u64),
                        etag: object.e_tag().unwrap_or_default().to_owned(),
                    });
                }
            }
            if objects.len() > limit {
                return Ok(objects);
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        // AWS S3 always lists ETags; some S3-compatible servers (s3s-fs, which the demo runs)
        // do not. The trainer keys its feature cache by ETag, so fill the gaps from HeadObject.
        let missing: Vec<usize> = (0..objects.len())
            .filter(|&i| objects[i].etag.is_empty())
            .collect();
        let heads: Vec<(usize, Result<String>)> = stream::iter(missing)
            .map(|i| {
                let key = objects[i].key.clone();
                async move { (i, self.head_etag(bucket, &key).await) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (i, etag) in heads {
            objects[i].etag = etag?;
        }
        Ok(objects)
    }

    async fn head_etag(&self, bucket: &str, key: &str) -> Result<String> {
        let output = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("HeadObject", bucket, key, e))?;
        output
            .e_tag()
            .map(str::to_owned)
            .ok_or_else(|| PipelineError::S3 {
                operation: "HeadObject",
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                message: "the server returned no ETag; lambda-vision needs ETags to cache features"
                    .to_owned(),
            })
    }

    /// Fetches `keys` with at most `concurrency` requests in flight, yielding in key order.
    pub fn get_many<'a>(
        &'a self,
        bucket: &'a str,
        keys: Vec<String>,
        concurrency: usize,
    ) -> impl Stream<Item = (String, Result<Object>)> + 'a {
        stream::iter(keys)
            .map(move |key| async move {
                let result = self.get(bucket, &key).await;
                (key, result)
            })
            .buffered(concurrency.max(1))
    }
}

/// Documents as JSON: parse errors name the document and its key, and writes are pretty-printed
/// (people read these files).
impl S3Store {
    /// Reads and parses a document that must exist.
    pub async fn get_json<T: Document>(&self, bucket: &str, key: &str) -> Result<Stored<T>> {
        let object = self.get(bucket, key).await?;
        Ok(Stored {
            document: parse::<T>(bucket, key, &object.bytes)?,
            etag: object.etag,
        })
    }

    /// Reads and parses a document, or `None` when it does not exist.
    pub async fn get_json_if_exists<T: Document>(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Stored<T>>> {
        match self.get_if_exists(bucket, key).await? {
            None => Ok(None),
            Some(object) => Ok(Some(Stored {
                document: parse::<T>(bucket, key, &object.bytes)?,
                etag: object.etag,
            })),
        }
    }

    /// For documents that are only informational or about to be replaced: an object that does
    /// not parse is `Some` with `document: None` (its ETag still guards a replacement) instead
    /// of an error.
    pub async fn get_json_lenient<T: Document>(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Stored<Option<T>>>> {
        Ok(self.get_if_exists(bucket, key).await?.map(|object| Stored {
            document: serde_json::from_slice(&object.bytes).ok(),
            etag: object.etag,
        }))
    }

    /// Writes a document unconditionally.
    pub async fn put_json<T: Document>(&self, bucket: &str, key: &str, document: &T) -> Result<()> {
        self.put(bucket, key, encode(document)?, JSON_CONTENT_TYPE)
            .await?;
        Ok(())
    }

    /// Writes a document only if the key is free; `Ok(false)` when it was taken.
    pub async fn put_json_if_absent<T: Document>(
        &self,
        bucket: &str,
        key: &str,
        document: &T,
    ) -> Result<bool> {
        self.put_if_absent(bucket, key, encode(document)?, JSON_CONTENT_TYPE)
            .await
    }

    /// Replaces a document only if it still has `etag`; `Ok(false)` when it changed.
    pub async fn put_json_if_match<T: Document>(
        &self,
        bucket: &str,
        key: &str,
        document: &T,
        etag: &str,
    ) -> Result<bool> {
        self.put_if_match(bucket, key, encode(document)?, JSON_CONTENT_TYPE, etag)
            .await
    }
}

pub(crate) fn parse<T: Document>(bucket: &str, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| PipelineError::BadDocument {
        what: T::NAME,
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

pub(crate) fn encode<T: Document>(document: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(document).map_err(|e| PipelineError::Encode {
        what: T::NAME,
        reason: e.to_string(),
    })
}

enum Condition<'a> {
    None,
    Absent,
    Matches(&'a str),
}

fn s3_error<E>(
    operation: &'static str,
    bucket: &str,
    key: &str,
    error: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> PipelineError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    // A missing bucket is a broken deployment, not a missing object: report it as S3 says it.
    let missing_bucket = error.as_service_error().and_then(|e| e.code()) == Some("NoSuchBucket");
    match status {
        Some(404) if !missing_bucket => PipelineError::NotFound {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        // A read's precondition (If-Match) failed: the object is another version now.
        Some(412) if operation == "GetObject" => PipelineError::Changed {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        // 412 PreconditionFailed; 409 ConditionalRequestConflict (a concurrent conditional write).
        Some(412) | Some(409) => PipelineError::AlreadyExists {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        _ => PipelineError::S3 {
            operation,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message: crate::error::describe_sdk_error(&error),
        },
    }
}
