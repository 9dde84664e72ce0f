//! Scans a folder as a build context and drains its tar stream, to measure memory:
//!
//! ```text
//! cargo build --release --example context_stream
//! /usr/bin/time -v target/release/examples/context_stream DIR              # to /dev/null
//! /usr/bin/time -v target/release/examples/context_stream DIR --build TAG  # to the engine
//! ```
//!
//! The Dockerfile is `DIR/Dockerfile` if there is one, else a `FROM scratch` one written
//! outside the folder. With `--build TAG` the stream is the body of a real engine build
//! (remove the image afterwards: `docker rmi --no-prune TAG`).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bottle::context::{self, DockerfileRef};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, tag) = match args.as_slice() {
        [dir] => (PathBuf::from(dir), None),
        [dir, flag, tag] if flag == "--build" => (PathBuf::from(dir), Some(tag.clone())),
        _ => bail!("usage: context_stream DIR [--build TAG]"),
    };
    let scratch = tempfile::tempdir()?;
    let mut host_path = dir.join("Dockerfile");
    if !host_path.is_file() {
        host_path = scratch.path().join("Dockerfile");
        std::fs::write(
            &host_path,
            "FROM scratch\nLABEL bottle.example=context_stream\n",
        )?;
    }
    let entries = context::scan(&dir)?;
    let (digest, _) = bottle::digest::file_digest(&host_path)?;
    let ctx = context::tar_stream(dir, entries, DockerfileRef { host_path, digest });
    match tag {
        Some(tag) => {
            let engine = bottle::runtime::docker::connect().await?;
            let id = bottle::runtime::docker::build(&engine, ctx, &tag, HashMap::new(), |l| {
                eprintln!("{l}")
            })
            .await?;
            println!("built {tag} ({id})");
        }
        None => {
            let mut stream = ctx.stream;
            let mut drained = 0u64;
            while let Some(chunk) = stream.next().await {
                drained += chunk?.len() as u64;
            }
            let sent = ctx.done.await.context("the producer panicked")??;
            println!("{drained} bytes drained ({sent} sent)");
        }
    }
    Ok(())
}
