//! `bottle supervise RUN`: the agent's requests to a person, listed (`--all`), followed
//! (`--watch`) and answered (`--approve`, `--deny [--reason]`, `--answer`), over
//! [`crate::run::supervise`].

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;

use super::{Global, Outcome, out, out_json, print_json};
use crate::daemons::supervise::queue::{Reply, Status, View, now_ms};
use crate::run::supervise::RunQueue;
use crate::store::Store;

/// How often `--watch` looks for new requests.
const WATCH_POLL: Duration = Duration::from_millis(200);

/// The reply the flags ask for, if any: `(id, reply)`.
pub fn act(
    approve: &Option<String>,
    deny: &Option<String>,
    reason: &Option<String>,
    answer: &Option<Vec<String>>,
) -> Option<(String, Reply)> {
    let reason = reason.clone();
    if let Some(id) = approve {
        return Some((id.clone(), Reply::Approve { reason }));
    }
    if let Some(id) = deny {
        return Some((id.clone(), Reply::Deny { reason }));
    }
    match answer.as_deref() {
        Some([id, text]) => Some((id.clone(), Reply::Answer { text: text.clone() })),
        _ => None,
    }
}

pub async fn supervise(
    g: &Global,
    store: &Store,
    run: &str,
    act: Option<(String, Reply)>,
    all: bool,
    watch: bool,
) -> Result<Outcome> {
    let rq = RunQueue::open(store, run)?;
    if let Some((id, reply)) = act {
        let (view, _) = rq.reply(&id, reply)?;
        if g.json {
            print_json(&serde_json::to_value(&view)?)?;
        } else {
            out(replied(&view))?;
        }
        return Ok(Outcome::Success);
    }
    if watch {
        return follow(g, &rq).await;
    }
    let views = rq.list(all)?;
    if g.json {
        print_json(&serde_json::to_value(&views)?)?;
    } else if views.is_empty() {
        if g.quiet == 0 {
            eprintln!(
                "no {}requests in run {}",
                if all { "" } else { "pending " },
                rq.run_id()
            );
        }
    } else {
        out(format!(
            "{:<8}  {:<10}  {:<8}  {:>4}  WHAT",
            "ID", "KIND", "STATUS", "AGE"
        ))?;
        let now = now_ms();
        for v in &views {
            out(line(v, now))?;
        }
    }
    Ok(Outcome::Success)
}

/// `--show ID`: one request whole (its value or question uncut, escaped).
pub fn show(g: &Global, store: &Store, run: &str, id: &str) -> Result<Outcome> {
    let rq = RunQueue::open(store, run)?;
    let Some(v) = rq.list(true)?.into_iter().find(|v| v.request.id == id) else {
        anyhow::bail!(
            "run {} has no request {id:?}; `bottle supervise {run} --all` lists them",
            rq.run_id()
        );
    };
    if g.json {
        return print_json(&serde_json::to_value(&v)?).map(|_| Outcome::Success);
    }
    out(format!(
        "{}  {}  {}",
        v.request.id,
        v.request.ask.kind(),
        v.status.name()
    ))?;
    out(v.request.ask.whole())?;
    if let Some(why) = &v.request.why {
        out(format!("why: {}", why.escape_debug()))?;
    }
    Ok(Outcome::Success)
}

/// `--watch`: the pending requests, then each new one as it is filed, until the run ends.
async fn follow(g: &Global, rq: &RunQueue) -> Result<Outcome> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut first = true;
    loop {
        let live = rq.is_live();
        // At the start, the pending ones; then every new one, whatever became of it.
        let views = rq.list(!first).unwrap_or_default();
        for v in views {
            if !seen.insert(v.request.id.clone()) {
                continue;
            }
            if g.json {
                out_json(&serde_json::to_string(&v)?)?;
            } else {
                out(line(&v, now_ms()))?;
            }
        }
        if first {
            // Requests answered before the watch began are not news.
            seen.extend(
                rq.list(true)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v.request.id),
            );
            first = false;
        }
        if !live {
            if g.quiet == 0 {
                eprintln!("run {} ended", rq.run_id());
            }
            return Ok(Outcome::Success);
        }
        tokio::time::sleep(WATCH_POLL).await;
    }
}

/// One request for people: id, kind, status, age, what (and why).
fn line(v: &View, now_ms: u64) -> String {
    let why = v
        .request
        .why
        .as_deref()
        .map(|w| format!("  (why: {})", w.escape_debug()))
        .unwrap_or_default();
    format!(
        "{:<8}  {:<10}  {:<8}  {:>4}  {}{why}",
        v.request.id,
        v.request.ask.kind(),
        v.status.name(),
        age(now_ms.saturating_sub(v.request.time_ms)),
        v.request.ask.what()
    )
}

/// What was done, for people.
fn replied(v: &View) -> String {
    let what = format!("{} {}", v.request.ask.kind(), v.request.ask.what());
    match v.status {
        Status::Approved => format!(
            "{}  approved: {what} (in force within a second, for this run)",
            v.request.id
        ),
        Status::Denied => format!("{}  denied: {what}", v.request.id),
        _ => format!("{}  answered: {what}", v.request.id),
    }
}

/// A duration in its largest whole unit: `45s`, `3m`, `2h`, `4d`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_are_short() {
        assert_eq!(super::age(999), "0s");
        assert_eq!(super::age(61_000), "1m");
        assert_eq!(super::age(7_300_000), "2h");
        assert_eq!(super::age(90_000_000), "1d");
    }
}
