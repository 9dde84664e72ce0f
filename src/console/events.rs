//! One page's live updates: a server-sent events stream that reads the run folders every
//! [`POLL`] and sends what changed — the runs, the open run's requests, the new lines of its
//! audit log. The stream holds only what it last sent (to send changes only); the truth stays
//! in the run folders, so every page and the CLI see the same.
//!
//! Events (`data` is JSON):
//!
//! | event | data |
//! | --- | --- |
//! | `reset` | `{"run": RUNID or null}`: forget the audit lines shown (a new stream) |
//! | `runs` | every run ([`super::api::RunRow`]) |
//! | `requests` | the open run's requests ([`super::api::RequestRow`]), oldest first |
//! | `audit` | new lines of the open run's audit log ([`crate::daemons::audit::Event`]) |

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use hyper::body::Frame;
use tokio::sync::mpsc;

use super::api;
use crate::store::Store;

/// How often a stream reads the run folders.
pub const POLL: Duration = Duration::from_millis(250);
/// How often an idle stream sends a comment, so a dead connection is noticed.
const PING: Duration = Duration::from_secs(15);
/// The most audit lines in one event.
const AUDIT_BATCH: usize = 200;

/// The stream of one page, following run `run` when it names one.
pub fn stream(
    store: Store,
    run: Option<String>,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(follow(store, run, tx));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(Frame::data(b)), rx))
    })
}

fn event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Reads and sends until the page goes away.
async fn follow(store: Store, run: Option<String>, tx: mpsc::Sender<Bytes>) {
    let run = run.filter(|r| api::is_run_id(r));
    let reset = serde_json::json!({ "run": run }).to_string();
    if tx.send(event("reset", &reset)).await.is_err() {
        return;
    }
    let (mut last_runs, mut last_requests) = (String::new(), String::new());
    let mut reader = None;
    let mut idle = Duration::ZERO;
    loop {
        let mut out: Vec<Bytes> = Vec::new();
        if let Ok(rows) = api::runs(&store) {
            let json = serde_json::to_string(&rows).expect("rows serialize");
            if json != last_runs {
                out.push(event("runs", &json));
                last_runs = json;
            }
        }
        if let Some(run) = &run {
            if let Ok(rows) = api::requests(&store, run) {
                let json = serde_json::to_string(&rows).expect("rows serialize");
                if json != last_requests {
                    out.push(event("requests", &json));
                    last_requests = json;
                }
            }
            if reader.is_none() {
                reader = api::audit_reader(&store, run);
            }
            if let Some(r) = reader.as_mut() {
                let lines = r.read_new().unwrap_or_default();
                for chunk in lines.chunks(AUDIT_BATCH) {
                    let json = serde_json::to_string(chunk).expect("events serialize");
                    out.push(event("audit", &json));
                }
            }
        }
        if out.is_empty() && idle >= PING {
            out.push(Bytes::from_static(b": ping\n\n"));
        }
        idle = if out.is_empty() {
            idle + POLL
        } else {
            Duration::ZERO
        };
        for b in out {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = tx.closed() => return,
        }
    }
}
