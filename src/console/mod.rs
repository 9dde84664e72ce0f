//! `bottle console`: one local web page for the runs of a store — every live run (and the
//! ended ones until `bottle gc`), each run's audit stream, its pending supervise requests with
//! Approve / Deny / Answer, and git-gate's pushes — updated live, with no reload.
//!
//! The console holds no state of its own: the state is the run folders (`runs/RUNID/`: the
//! record, `audit/audit.jsonl`, `supervise/`), read every [`events::POLL`] for each open page
//! and answered through [`crate::run::supervise::RunQueue::reply`], the very call
//! `bottle supervise --approve` makes. So two consoles and the CLI on one store agree, and a
//! request is answered once whoever answers it (the queue's answer file is written by a link
//! that fails when it exists).
//!
//! | module | owns |
//! | --- | --- |
//! | [`server`] | the listener, connection limits, routing, security headers |
//! | [`auth`] | the per-start token, the session cookie, `Host`/`Origin` and CSRF checks |
//! | [`api`] | the JSON snapshots (runs, requests, audit) and replies |
//! | [`events`] | the server-sent events stream of one page |
//! | [`page`] | the HTML, CSS and JS, embedded in the binary |
//!
//! Security, as for any local web page that can change policy: the URL printed at start
//! carries a random token, exchanged once for an `HttpOnly`, `SameSite=Strict` cookie; every
//! request's `Host` must name the listening address (`localhost` or an IP literal, never
//! another DNS name: DNS rebinding), an `Origin` must be the page's own (cross-site requests),
//! and every state-changing request is a `POST` carrying the page's CSRF token in a header.
//! The page loads nothing from elsewhere (a strict Content-Security-Policy says so too), and
//! agent text reaches it as JSON data only, set with `textContent`, never as HTML.
//!
//! The server is hyper 1 directly (with hyper-util's tokio glue), already the stack of
//! pipelock, egress and supervise: the console needs a handful of routes, one SSE stream and
//! precise control over every header it checks, and axum would add a router, tower layers and
//! their extractors to the binary that is copied into every bundle image, for no check it
//! could not write as plainly here.

pub mod api;
pub mod auth;
pub mod events;
pub mod page;
pub mod server;

use std::net::SocketAddr;

pub use server::{Console, serve};

/// Where `bottle console` listens unless `--listen` says.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7780";

/// The warning printed when the console listens on an address other hosts may reach, or
/// `None` for a loopback address.
pub fn exposure_warning(addr: &SocketAddr) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "warning: --listen {addr} is not a loopback address: anyone who can reach it and learns the URL's token can approve this store's agents' requests; the console's traffic is plain HTTP"
    ))
}
