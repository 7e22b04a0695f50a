//! `local-s3 ROOT [PORT]`: serves the folder ROOT as S3 on `127.0.0.1:PORT` (default: a free
//! port) until killed, for tools that need an S3 in another process (the side-by-side
//! benchmark). Prints the endpoint URL on its first line. Credentials: [`local_s3::ACCESS_KEY`]
//! and [`local_s3::SECRET_KEY`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().context("usage: local-s3 ROOT [PORT]")?);
    let port = match args.next() {
        Some(port) => port
            .parse()
            .with_context(|| format!("{port:?} is not a port"))?,
        None => 0,
    };
    let server = local_s3::LocalS3::start_on(&root, port).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", server.endpoint)?;
    stdout.flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
