//! What the console's page reads and does, over the run folders and the library calls the CLI
//! makes: the runs (`bottle ps`'s rows, and the ended runs whose log stays until `bottle gc`),
//! a run's requests (the queue's views), its audit log ([`audit::AuditReader`]), and a reply to a
//! request ([`RunQueue::reply`], as `bottle supervise --approve/--deny/--answer`).

use anyhow::Result;
use hyper::StatusCode;
use serde::{Deserialize, Serialize};

use crate::daemons::supervise::queue::{Ask, Reply, ReplyError, View, show};
use crate::run::record;
use crate::run::supervise::{RunQueue, RunQueueError, queue_of};
use crate::run::{audit, ops};
use crate::store::Store;

/// The most bytes of a run's audit log a page is sent when it opens the run (the recent lines).
pub const AUDIT_TAIL: u64 = 256 * 1024;
/// The longest reason or answer accepted, in bytes (supervise's own limit on text).
pub const MAX_REPLY_TEXT: usize = crate::daemons::supervise::MAX_TEXT;

/// One run on the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunRow {
    pub run_id: String,
    /// The recipe's name (none for an ended run: only its log stays).
    pub name: Option<String>,
    pub hash: Option<String>,
    /// `up`, `start` (coming up), `dead` (its process died; `bottle down` cleans up) or
    /// `ended` (torn down; its log stays until `bottle gc`).
    pub state: &'static str,
    /// Seconds since the Unix epoch.
    pub started: Option<u64>,
    pub ended: Option<u64>,
    /// Requests waiting for a person; none when the run has no supervise queue.
    pub pending: Option<usize>,
}

/// Every run of the store: the live and stale ones (oldest first), then the ended ones.
pub fn runs(store: &Store) -> Result<Vec<RunRow>> {
    let mut rows: Vec<RunRow> = ops::ps(store)?
        .into_iter()
        .map(|r| RunRow {
            state: match (r.live, r.ready) {
                (true, true) => "up",
                (true, false) => "start",
                (false, _) => "dead",
            },
            run_id: r.run_id,
            name: Some(r.name),
            hash: r.hash.map(|h| h.to_string()),
            started: Some(r.started),
            ended: None,
            pending: r.pending_requests,
        })
        .collect();
    let mut ended = Vec::new();
    if let Ok(rd) = std::fs::read_dir(record::runs_dir(store)) {
        for ent in rd.flatten() {
            let dir = ent.path();
            let Some(run_id) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !is_run_id(&run_id) || dir.join(record::RECORD_FILE).exists() {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(dir.join(crate::store::RUN_ENDED)) else {
                continue;
            };
            ended.push(RunRow {
                run_id,
                name: None,
                hash: None,
                state: "ended",
                started: None,
                ended: text.trim().parse().ok(),
                pending: None,
            });
        }
    }
    ended.sort_by(|a, b| (b.ended, &b.run_id).cmp(&(a.ended, &a.run_id)));
    rows.extend(ended);
    Ok(rows)
}

/// Whether `s` can name a run folder: 1 to 64 ASCII letters, digits, `-` and `_` (never a path).
pub fn is_run_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One request on the page: the queue's view and what approving it means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRow {
    #[serde(flatten)]
    pub view: View,
    /// What an approval grants (or what the question is), in words for the person.
    pub means: String,
    /// Whether it is a grant (Approve / Deny) or a question (Answer / Deny).
    pub grant: bool,
}

/// Every request of run `run_id`, oldest first; none when it has no queue.
pub fn requests(store: &Store, run_id: &str) -> Result<Vec<RequestRow>> {
    if !is_run_id(run_id) {
        return Ok(Vec::new());
    }
    let queue = queue_of(store, run_id);
    if !queue.root().is_dir() {
        return Ok(Vec::new());
    }
    Ok(queue
        .views()?
        .into_iter()
        .map(|view| RequestRow {
            means: means(&view.request.ask),
            grant: view.request.ask.is_grant(),
            view,
        })
        .collect())
}

fn means(ask: &Ask) -> String {
    match ask {
        Ask::AllowHost { host } => match show::ip_of(host) {
            None => "let pipelock forward the guest's requests to this exact host name (not its subdomains), for the rest of this run".into(),
            Some(_) => format!(
                "let pipelock forward the guest's requests to {}, for the rest of this run",
                show::host(host)
            ),
        },
        Ask::AllowDlp { rule, value } => format!(
            "let this exact value ({} bytes), which DLP rule {rule:?} flagged as a credential, leave the guest, for the rest of this run",
            value.len()
        ),
        Ask::Question { .. } => "a question for you; the agent waits for your answer".into(),
    }
}

/// A reply as the page posts it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// `approve`, `deny` or `answer`.
    pub action: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
}

/// A reply that could not be given: the status and the message for the page.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl ReplyBody {
    fn reply(self) -> Result<Reply, ApiError> {
        let too_long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > MAX_REPLY_TEXT);
        if too_long(&self.reason) || too_long(&self.text) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("a reason or answer may be at most {MAX_REPLY_TEXT} bytes"),
            ));
        }
        let reason = self.reason.filter(|r| !r.trim().is_empty());
        match self.action.as_str() {
            "approve" => Ok(Reply::Approve { reason }),
            "deny" => Ok(Reply::Deny { reason }),
            "answer" => Ok(Reply::Answer {
                text: self.text.unwrap_or_default(),
            }),
            other => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown action {other:?}: approve, deny or answer"),
            )),
        }
    }
}

/// Answers request `id` of run `run_id` exactly as `bottle supervise` does.
pub fn reply(store: &Store, run_id: &str, id: &str, body: ReplyBody) -> Result<View, ApiError> {
    let reply = body.reply()?;
    if !is_run_id(run_id) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such run"));
    }
    let rq = RunQueue::open(store, run_id).map_err(status_of)?;
    if rq.run_id() != run_id {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such run"));
    }
    rq.reply(id, reply).map(|(view, _)| view).map_err(status_of)
}

/// The status a library error answers with; its message (with its causes) is the body.
fn status_of(e: anyhow::Error) -> ApiError {
    let status = if let Some(r) = e.downcast_ref::<ReplyError>() {
        match r {
            ReplyError::Unknown { .. } => StatusCode::NOT_FOUND,
            ReplyError::Answered { .. } => StatusCode::CONFLICT,
            ReplyError::Queue(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    } else if let Some(r) = e.downcast_ref::<RunQueueError>() {
        match r {
            RunQueueError::NoQueue { .. } => StatusCode::NOT_FOUND,
            RunQueueError::NotLive { .. } => StatusCode::CONFLICT,
        }
    } else {
        StatusCode::NOT_FOUND
    };
    ApiError::new(status, format!("{e:#}"))
}

/// A reader of run `run_id`'s audit log from its recent lines, once the run's folder exists.
pub fn audit_reader(store: &Store, run_id: &str) -> Option<audit::AuditReader> {
    if !is_run_id(run_id) || !record::run_dir(store, run_id).is_dir() {
        return None;
    }
    audit::AuditReader::open(store, run_id)
        .ok()
        .map(|r| r.from_tail(AUDIT_TAIL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_never_paths() {
        assert!(is_run_id("k3x9mq2a-0"));
        for bad in ["", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!is_run_id(bad), "{bad}");
        }
    }

    #[test]
    fn an_ip_host_is_shown_with_its_class() {
        let means = |host: &str| means(&Ask::AllowHost { host: host.into() });
        let loopback = means("2130706433");
        assert!(
            loopback.contains("= 127.0.0.1")
                && loopback.contains("loopback")
                && loopback.contains("allow_private"),
            "{loopback}"
        );
        assert!(means("169.254.169.254").contains("cloud metadata"));
        assert!(means("8.8.8.8").contains("public"));
        assert!(means("a.test").contains("exact host name"));
    }

    #[test]
    fn replies_are_the_queues() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let r = record::new_record("r1", None, "demo", crate::plan::GuestBackend::Docker, None);
        r.save(&store).unwrap();
        let q = queue_of(&store, "r1");
        q.prepare().unwrap();
        let req = q
            .file(
                Ask::AllowHost {
                    host: "a.test".into(),
                },
                None,
            )
            .unwrap();
        let body = |action: &str| ReplyBody {
            action: action.into(),
            reason: None,
            text: None,
        };
        let e = reply(&store, "r1", &req.id, body("answer")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
        let e = reply(&store, "r1", "nosuchid", body("approve")).unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND, "{}", e.message);
        let v = reply(&store, "r1", &req.id, body("approve")).unwrap();
        assert_eq!(v.status, crate::daemons::supervise::queue::Status::Approved);
        let e = reply(&store, "r1", &req.id, body("deny")).unwrap_err();
        assert_eq!(e.status, StatusCode::CONFLICT, "{}", e.message);
        let rows = requests(&store, "r1").unwrap();
        assert_eq!(rows.len(), 1);
        assert!(rows[0].grant && rows[0].means.contains("exact host"));
        let runs = runs(&store).unwrap();
        assert_eq!(runs[0].state, "start");
    }
}
