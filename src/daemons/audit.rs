//! The audit log: one JSON line per request the guest makes through pipelock, per ref update
//! it pushes through git-gate and per grant a person made for the run through supervise,
//! appended to a file of the run's folder
//! (`runs/RUNID/audit/audit.jsonl` on the host, kept after teardown until `bottle gc`;
//! `bottle logs RUN` prints it), and a short line on stderr.
//!
//! A line holds the time, the run, the method, host and port, the path with query *values*
//! dropped (names kept), the decision and the rule behind it, the status, the bytes each way
//! and the duration; a git-gate line also the ref update ([`GitUpdate`]). Never a header value,
//! a query value, a matched secret or a key: those are where credentials live. pipelock masks
//! whatever a DLP rule matches in the host or path it logs — a path segment, a bare query, a
//! parameter's name — whether or not the request was refused (`/p/ghp_…[redacted]`; see
//! `dlp::Redactor`).

//!
//! This module owns the line's format, which the bundle's daemons write and the host reads
//! (`bottle logs`, the console); the writer is `crate::bundle::audit`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Where the audit log folder (the run's `audit/`) is mounted in the bundle.
pub const AUDIT_DIR: &str = "/var/log/bottle";
/// The audit log's file name, in the bundle's [`AUDIT_DIR`] and the run's `audit/` folder.
pub const AUDIT_FILE: &str = "audit.jsonl";
/// The run folder mounted at [`AUDIT_DIR`].
pub const AUDIT_RUN_DIR: &str = "audit";

/// The audit log's path in the bundle, as each daemon's config names it.
pub fn log_in_bundle() -> String {
    format!("{AUDIT_DIR}/{AUDIT_FILE}")
}

/// What pipelock decided about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Forwarded as it was.
    Allowed,
    /// Forwarded through egress, with the real credential in place of the guest's.
    Injected,
    /// Refused: the host is not allowed, or DLP found a credential.
    Refused,
    /// Not a request pipelock can serve (malformed, another scheme).
    Invalid,
    /// Allowed, but the upstream could not be reached or failed.
    Failed,
    /// Not a request: a person granted something for this run through supervise (a host, or
    /// a value DLP flagged); `host` names it (`dlp:RULE` for a value, never the value itself)
    /// and `rule` the supervise request (`supervise:ID`).
    Granted,
}

impl Decision {
    /// Its name in the log (`allowed`, `refused`, …).
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Injected => "injected",
            Decision::Refused => "refused",
            Decision::Invalid => "invalid",
            Decision::Failed => "failed",
            Decision::Granted => "granted",
        }
    }
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub run: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    /// The path, query values dropped (`/search?q=`), DLP matches masked.
    pub path: String,
    pub decision: Decision,
    /// What decided it: `allowlist`, a DLP rule id, `route:HOST`…
    pub rule: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_ms: u64,
    /// git-gate's lines: the ref update the line is about (absent from pipelock's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitUpdate>,
}

/// One ref update of a push through git-gate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitUpdate {
    /// The recipe's name of the upstream (`[[git-gate.upstreams]] name`).
    pub upstream: String,
    /// The full ref name (`refs/heads/agent/x`).
    pub ref_name: String,
    /// Object ids in hex; forty zeros for none (a creation's old, a deletion's new).
    pub old: String,
    pub new: String,
}

impl Event {
    /// A grant a person made for the run through supervise: `what` is the host, or
    /// `dlp:RULE` for a value DLP flagged (never the value); `request` the supervise request's
    /// id.
    pub fn granted(run: &str, what: &str, request: &str) -> Event {
        Event {
            time_ms: Event::now_ms(),
            run: run.to_string(),
            method: "GRANT".into(),
            host: what.to_string(),
            port: 0,
            path: "-".into(),
            decision: Decision::Granted,
            rule: Some(format!("supervise:{request}")),
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0,
            git: None,
        }
    }

    pub fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The first 12 digits of an object id.
pub fn short(oid: &str) -> &str {
    &oid[..oid.len().min(12)]
}
