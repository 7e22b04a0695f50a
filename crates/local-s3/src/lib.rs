//! An S3-compatible server in-process: `s3s-fs` serving a folder over HTTP on loopback, so
//! code talks real S3 (SigV4, conditional writes, listings) through the AWS SDK, and every
//! object is a plain file, `<root>/<bucket>/<key>`. The demo runs on it; tests stop and restart
//! it to play an S3 outage (the objects survive, being files). It counts the requests it
//! serves by operation, so tests can check what a piece of work costs in S3 requests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The server's credentials; it listens on loopback only.
pub const ACCESS_KEY: &str = "lambda-vision-local";
pub const SECRET_KEY: &str = "lambda-vision-local-secret";

/// A running server. Dropping it (or [`LocalS3::stop`]) closes the listener and every open
/// connection at once, as an outage would.
pub struct LocalS3 {
    pub endpoint: String,
    pub root: PathBuf,
    pub port: u16,
    requests: RequestCounter,
    task: tokio::task::JoinHandle<()>,
}

/// Requests served, by S3 operation name (`GetObject`, `PutObject`, …), signed ones only.
#[derive(Clone, Default)]
struct RequestCounter(Arc<Mutex<BTreeMap<String, u64>>>);

/// Counts every signed request, then lets it through (unsigned ones are refused, as by
/// default).
#[async_trait::async_trait]
impl S3Access for RequestCounter {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> s3s::S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3s::s3_error!(AccessDenied, "signed requests only"));
        }
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(cx.s3_op().name().to_owned()).or_default() += 1;
        }
        Ok(())
    }
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalS3 {
    /// Serves `root` (each sub-folder a bucket) on `127.0.0.1:<free port>`.
    pub async fn start(root: &Path) -> Result<LocalS3> {
        Self::start_on(root, 0).await
    }

    /// Serves `root` on `port` (0: any free port), e.g. again after [`LocalS3::stop`].
    pub async fn start_on(root: &Path, port: u16) -> Result<LocalS3> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        let file_system = s3s_fs::FileSystem::new(root)
            .map_err(|e| anyhow::anyhow!("cannot serve {} as S3: {e:?}", root.display()))?;
        let requests = RequestCounter::default();
        let service = {
            let mut builder = S3ServiceBuilder::new(file_system);
            builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            builder.set_access(requests.clone());
            builder.build()
        };
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let builder = ConnectionBuilder::new(TokioExecutor::new());
            // Owned here, so aborting this task aborts every connection too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                // Small responses go out at once, as from S3 itself (not after a delayed ACK).
                let _ = socket.set_nodelay(true);
                let connection = builder
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                connections.spawn(async move {
                    let _ = connection.await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(LocalS3 {
            endpoint: format!("http://127.0.0.1:{port}"),
            root: root.to_owned(),
            port,
            requests,
            task,
        })
    }

    /// The requests served so far, by operation name, and starts counting again from zero.
    pub fn take_request_counts(&self) -> BTreeMap<String, u64> {
        self.requests
            .0
            .lock()
            .map(|mut counts| std::mem::take(&mut *counts))
            .unwrap_or_default()
    }

    /// The AWS SDK settings that reach this server (its region, credentials and endpoint), as
    /// a loader: callers add their own settings, such as a retry policy, then `.load()` it.
    pub fn sdk_config_builder(&self) -> aws_config::ConfigLoader {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                ACCESS_KEY,
                SECRET_KEY,
                None,
                None,
                "local_s3::LocalS3",
            ))
            .endpoint_url(&self.endpoint)
    }

    /// Stops serving: new connections are refused and open ones are cut.
    pub fn stop(self) {}
}
