//! The demo's S3: `s3s-fs` serving a folder over HTTP on a free loopback port, so the
//! pipeline talks real S3 (SigV4, conditional writes, listings) through the AWS SDK, and the
//! user can browse every bucket as plain files.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

/// The demo server's credentials; it listens on loopback only.
pub const ACCESS_KEY: &str = "lambda-vision-demo";
pub const SECRET_KEY: &str = "lambda-vision-demo-secret";

/// A running server; it stops when dropped.
pub struct LocalS3 {
    pub endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `root` (each sub-folder a bucket) on `127.0.0.1:<free port>`.
pub async fn start(root: &Path) -> Result<LocalS3> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let file_system = s3s_fs::FileSystem::new(root)
        .map_err(|e| anyhow::anyhow!("cannot serve {} as S3: {e:?}", root.display()))?;
    let service = {
        let mut builder = S3ServiceBuilder::new(file_system);
        builder.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        builder.build()
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot listen on a loopback port")?;
    let address = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let connections = ConnectionBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let connection = connections
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
    Ok(LocalS3 {
        endpoint: format!("http://{address}"),
        task,
    })
}
