//! `bottle console`: binds, warns about a non-loopback address, prints the URL, serves
//! [`crate::console`] until Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};

use super::{Global, Outcome, interrupted, out};
use crate::console::{self, Console};
use crate::store::Store;

pub async fn console(g: &Global, store: &Store, listen: SocketAddr, open: bool) -> Result<Outcome> {
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; give another address with --listen 127.0.0.1:PORT (port 0: any free one)")
    })?;
    let addr = listener.local_addr()?;
    if let Some(warning) = console::exposure_warning(&addr) {
        eprintln!("{warning}");
    }
    let console = Arc::new(Console::new(store.clone(), addr));
    let url = console.url();
    if g.json {
        out(serde_json::json!({ "url": url, "listen": addr.to_string() }))?;
    } else {
        out(&url)?;
    }
    if g.quiet == 0 {
        eprintln!(
            "bottle console: the runs of {} at {url} (the token is good until this console stops; Ctrl-C stops it)",
            store.root().display()
        );
    }
    // Kept until the console stops: the page the browser opens, which sends it on to the URL.
    let _opener = if open { open_browser(&url) } else { None };
    tokio::select! {
        r = console::serve(console, listener) => r?,
        _ = interrupted() => {}
    }
    Ok(Outcome::Success)
}

/// Opens the URL with `xdg-open` through a file only this user can read that redirects to
/// it, so the token never appears in another process's argv. Best effort: says why not.
fn open_browser(url: &str) -> Option<tempfile::TempDir> {
    let opened = (|| -> Result<tempfile::TempDir> {
        let dir = tempfile::Builder::new()
            .prefix("bottle-console-")
            .tempdir()?;
        let file = dir.path().join("open.html");
        std::fs::write(
            &file,
            format!(
                "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url={url}\"><a href=\"{url}\">bottle console</a>\n"
            ),
        )?;
        std::process::Command::new("xdg-open")
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot run xdg-open")?;
        Ok(dir)
    })();
    match opened {
        Ok(dir) => Some(dir),
        Err(e) => {
            eprintln!("cannot open a browser ({e:#}); open the URL above yourself");
            None
        }
    }
}
