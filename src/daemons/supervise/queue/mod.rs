//! The queue: what the agent asked and what a person answered, as files of the run's folder
//! `runs/RUNID/supervise/` — mounted read-write in the bundle at `/var/lib/bottle/supervise` —
//! so the queue outlives a bundle restart and a person answers by writing a file on the host.
//! Both sides use this module: supervise in the bundle, `bottle supervise` on the host.
//!
//! ```text
//! supervise/
//! ├── requests/ID.json   a request ([`Request`]), written by supervise when the agent files it
//! ├── answers/ID.json    its answer ([`Answer`]), written by `bottle supervise` on the host
//! └── granted/ID         supervise applied the approved grant ID and recorded it in the audit log
//! ```
//!
//! Every file appears whole and once: it is written to a temporary file in its folder, then
//! linked to its name, which fails when the name exists. So an id is never reused, and of two
//! people answering one request at once, one wins and the other is told. Ids are eight
//! characters of an alphabet without look-alikes (`k3x9mq2a`).
//!
//! The bundle's daemon runs as root; the folders it makes are given to the owner of the queue
//! folder (the user who ran `bottle run`), so that user can remove them at teardown. It never
//! makes `answers/`: the host does, as its own user.

mod files;
pub mod show;

use std::path::{Path, PathBuf};

use files::{ids_in, json, own_like, read_all, read_one, write_new};

use serde::{Deserialize, Serialize};

pub const REQUESTS: &str = "requests";
pub const ANSWERS: &str = "answers";
pub const GRANTED: &str = "granted";

/// What the agent asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ask {
    /// Let pipelock reach this host (an exact name) for the rest of the run.
    AllowHost { host: String },
    /// Let DLP pass this exact value, which its rule `rule` flagged, for the rest of the run.
    AllowDlp { rule: String, value: String },
    /// A free-text question for the person.
    Question { text: String },
}

impl Ask {
    /// `allow_host`, `allow_dlp` or `question`: the JSON `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Ask::AllowHost { .. } => "allow_host",
            Ask::AllowDlp { .. } => "allow_dlp",
            Ask::Question { .. } => "question",
        }
    }

    /// Whether approving it grants something (a question is answered instead).
    pub fn is_grant(&self) -> bool {
        !matches!(self, Ask::Question { .. })
    }

    /// What it asks, in one line for people ([`show`]): the host (an IP address with its
    /// class), the rule and the value whole (or its length and fingerprint when too long),
    /// or the question (its start, saying it is cut).
    pub fn what(&self) -> String {
        match self {
            Ask::AllowHost { host } => show::host(host),
            Ask::AllowDlp { rule, value } => {
                format!("{}: {}", rule.escape_debug(), show::value(value))
            }
            Ask::Question { text } => show::question(text),
        }
    }

    /// Everything it asks, for `bottle supervise RUN --show ID`: several lines, nothing cut.
    pub fn whole(&self) -> String {
        match self {
            Ask::AllowHost { host } => format!("host: {}", show::host(host)),
            Ask::AllowDlp { rule, value } => format!(
                "rule: {}\nvalue: {} bytes, fingerprint {}, escaped:\n{}",
                rule.escape_debug(),
                value.len(),
                show::fingerprint(value),
                value.escape_debug()
            ),
            Ask::Question { text } => format!("question:\n{}", text.escape_debug()),
        }
    }
}

/// `requests/ID.json`: one request as filed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    #[serde(flatten)]
    pub ask: Ask,
    /// Why the agent asks, in its words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// When it was filed, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Approved,
    Denied,
    Answered,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Approved => "approved",
            Status::Denied => "denied",
            Status::Answered => "answered",
        }
    }
}

/// `answers/ID.json`: a person's answer to the request ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    /// `approved`, `denied` or `answered`.
    pub status: Status,
    /// Why it was denied (or approved), for the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The answer to a question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// When it was answered, in milliseconds since the Unix epoch.
    pub time_ms: u64,
}

/// A request and where it stands: what the API returns and `bottle supervise --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    #[serde(flatten)]
    pub request: Request,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_ms: Option<u64>,
}

impl View {
    pub fn of(request: Request, answer: Option<&Answer>) -> View {
        View {
            request,
            status: answer.map(|a| a.status).unwrap_or(Status::Pending),
            reason: answer.and_then(|a| a.reason.clone()),
            answer: answer.and_then(|a| a.answer.clone()),
            answered_ms: answer.map(|a| a.time_ms),
        }
    }
}

/// What a person replies, before it is checked against its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Approve { reason: Option<String> },
    Deny { reason: Option<String> },
    Answer { text: String },
}

/// The queue's files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot read {} (supervise's queue)", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {} (supervise's queue); check that the run's folder is writable", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A reply that cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error("this run has no request {id:?}; `bottle supervise RUN` lists its requests")]
    Unknown { id: String },
    #[error(
        "request {id} was already {} (a request is answered once); `bottle supervise RUN --json` shows its answer",
        status.name()
    )]
    Answered { id: String, status: Status },
    #[error("request {id} is a question: answer it with --answer {id} TEXT, or --deny {id}")]
    ApproveQuestion { id: String },
    #[error(
        "request {id} asks to {kind} {what}: --approve {id} or --deny {id} [--reason TEXT]; --answer is for questions"
    )]
    AnswerGrant {
        id: String,
        kind: &'static str,
        what: String,
    },
    #[error("the answer to request {id} is empty; give its text after the id")]
    Empty { id: String },
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// A run's queue folder.
#[derive(Debug, Clone)]
pub struct Queue {
    root: PathBuf,
}

impl Queue {
    pub fn new(root: impl Into<PathBuf>) -> Queue {
        Queue { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Makes the folders the daemon writes (`requests/`, `granted/`), owned like the queue.
    pub fn prepare(&self) -> Result<(), QueueError> {
        for name in [REQUESTS, GRANTED] {
            let dir = self.dir(name);
            std::fs::create_dir_all(&dir).map_err(|source| QueueError::Write {
                path: dir.clone(),
                source,
            })?;
            own_like(&dir, &self.root);
        }
        Ok(())
    }

    /// Files a new request under a fresh id.
    pub fn file(&self, ask: Ask, why: Option<String>) -> Result<Request, QueueError> {
        let dir = self.dir(REQUESTS);
        loop {
            let request = Request {
                id: new_id(),
                ask: ask.clone(),
                why: why.clone(),
                time_ms: now_ms(),
            };
            if write_new(&dir, &format!("{}.json", request.id), &json(&request))? {
                return Ok(request);
            }
        }
    }

    /// Every request, oldest first (a file that is not one is skipped).
    pub fn requests(&self) -> Result<Vec<Request>, QueueError> {
        let mut all: Vec<Request> = read_all(&self.dir(REQUESTS))?;
        all.sort_by(|a, b| (a.time_ms, &a.id).cmp(&(b.time_ms, &b.id)));
        Ok(all)
    }

    pub fn request(&self, id: &str) -> Result<Option<Request>, QueueError> {
        read_one(&self.dir(REQUESTS), id)
    }

    /// Every answer (a file that is not one is skipped).
    pub fn answers(&self) -> Result<Vec<Answer>, QueueError> {
        read_all(&self.dir(ANSWERS))
    }

    /// The ids of the answers there are, without reading them.
    pub fn answer_ids(&self) -> Result<Vec<String>, QueueError> {
        ids_in(&self.dir(ANSWERS))
    }

    pub fn answer(&self, id: &str) -> Result<Option<Answer>, QueueError> {
        read_one(&self.dir(ANSWERS), id)
    }

    /// Every request with where it stands, oldest first.
    pub fn views(&self) -> Result<Vec<View>, QueueError> {
        let answers = self.answers()?;
        Ok(self
            .requests()?
            .into_iter()
            .map(|r| {
                let a = answers.iter().find(|a| a.id == r.id);
                View::of(r, a)
            })
            .collect())
    }

    /// How many requests wait for an answer.
    pub fn pending_count(&self) -> Result<usize, QueueError> {
        let answered = self.answer_ids()?;
        Ok(ids_in(&self.dir(REQUESTS))?
            .into_iter()
            .filter(|id| !answered.contains(id))
            .count())
    }

    /// A person's reply to request `id`, checked against it and written once.
    pub fn reply(&self, id: &str, reply: Reply) -> Result<Answer, ReplyError> {
        let unknown = || ReplyError::Unknown { id: id.to_string() };
        if !is_id(id) {
            return Err(unknown());
        }
        let request = self.request(id)?.ok_or_else(unknown)?;
        if let Some(a) = self.answer(id)? {
            return Err(ReplyError::Answered {
                id: id.to_string(),
                status: a.status,
            });
        }
        let id = id.to_string();
        let (status, reason, answer) = match (reply, request.ask.is_grant()) {
            (Reply::Approve { .. }, false) => return Err(ReplyError::ApproveQuestion { id }),
            (Reply::Answer { .. }, true) => {
                return Err(ReplyError::AnswerGrant {
                    id,
                    kind: request.ask.kind(),
                    what: request.ask.what(),
                });
            }
            (Reply::Answer { text }, false) if text.trim().is_empty() => {
                return Err(ReplyError::Empty { id });
            }
            (Reply::Approve { reason }, true) => (Status::Approved, reason, None),
            (Reply::Deny { reason }, _) => (Status::Denied, reason, None),
            (Reply::Answer { text }, false) => (Status::Answered, None, Some(text)),
        };
        let answer = Answer {
            id,
            status,
            reason,
            answer,
            time_ms: now_ms(),
        };
        let dir = self.dir(ANSWERS);
        std::fs::create_dir_all(&dir).map_err(|source| QueueError::Write {
            path: dir.clone(),
            source,
        })?;
        if !write_new(&dir, &format!("{}.json", answer.id), &json(&answer))? {
            let status = self.answer(&answer.id)?.map(|a| a.status);
            return Err(ReplyError::Answered {
                id: answer.id,
                status: status.unwrap_or(Status::Answered),
            });
        }
        Ok(answer)
    }

    /// Whether the grant of request `id` was applied and recorded already.
    pub fn is_marked_granted(&self, id: &str) -> bool {
        self.dir(GRANTED).join(id).exists()
    }

    /// Marks the grant of request `id` as applied and recorded.
    pub fn mark_granted(&self, id: &str) -> Result<(), QueueError> {
        write_new(&self.dir(GRANTED), id, b"").map(|_| ())
    }
}

/// Whether `s` can be a request id: 1 to 32 lowercase letters and digits (so never a path).
pub fn is_id(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

const ID_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Eight characters from 40 random bits (std's per-process random hash keys, mixed with the
/// time; an id in use is never overwritten, see [`write_new`]).
fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let mut bits = h.finish();
    (0..8)
        .map(|_| {
            let c = ID_ALPHABET[(bits & 31) as usize] as char;
            bits >>= 5;
            c
        })
        .collect()
}

pub fn now_ms() -> u64 {
    crate::daemons::audit::Event::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::new(dir.path());
        q.prepare().unwrap();
        (dir, q)
    }

    fn host(h: &str) -> Ask {
        Ask::AllowHost { host: h.into() }
    }

    #[test]
    fn requests_are_files_with_short_unique_ids() {
        let (_d, q) = queue();
        let mut ids = std::collections::BTreeSet::new();
        for i in 0..200 {
            let r = q.file(host(&format!("h{i}.test")), None).unwrap();
            assert_eq!(r.id.len(), 8);
            assert!(is_id(&r.id));
            assert!(ids.insert(r.id.clone()), "id {} reused", r.id);
        }
        assert_eq!(q.requests().unwrap().len(), 200);
        assert_eq!(q.pending_count().unwrap(), 200);
        // Whole files only: no temporary file is left.
        let names: Vec<String> = std::fs::read_dir(q.root().join(REQUESTS))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| n.ends_with(".json") && !n.starts_with('.'))
        );
    }

    #[test]
    fn the_file_format_is_flat_json() {
        let (_d, q) = queue();
        let r = q
            .file(
                Ask::AllowDlp {
                    rule: "jwt".into(),
                    value: "v".into(),
                },
                Some("a fixture".into()),
            )
            .unwrap();
        let text = std::fs::read_to_string(q.root().join(REQUESTS).join(format!("{}.json", r.id)))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["kind"], "allow_dlp");
        assert_eq!(v["rule"], "jwt");
        assert_eq!(v["why"], "a fixture");
        let view = serde_json::to_value(View::of(r, None)).unwrap();
        assert_eq!(view["status"], "pending");
        assert_eq!(view["kind"], "allow_dlp");
        assert!(view.get("answer").is_none());
    }

    #[test]
    fn replies_are_checked_and_given_once() {
        let (_d, q) = queue();
        let h = q.file(host("a.test"), None).unwrap();
        let question = Ask::Question {
            text: "which branch?".into(),
        };
        let t = q.file(question, None).unwrap();
        let e = q.reply("nosuchid", Reply::Approve { reason: None });
        assert!(matches!(e, Err(ReplyError::Unknown { .. })), "{e:?}");
        assert!(matches!(
            q.reply("../../x", Reply::Approve { reason: None }),
            Err(ReplyError::Unknown { .. })
        ));
        let e = q.reply(&t.id, Reply::Approve { reason: None }).unwrap_err();
        assert!(e.to_string().contains("--answer"), "{e}");
        let e = q
            .reply(&h.id, Reply::Answer { text: "yes".into() })
            .unwrap_err();
        assert!(e.to_string().contains("a.test"), "{e}");
        let e = q
            .reply(&t.id, Reply::Answer { text: " ".into() })
            .unwrap_err();
        assert!(matches!(e, ReplyError::Empty { .. }));
        assert_eq!(q.pending_count().unwrap(), 2);

        let a = q.reply(&h.id, Reply::Approve { reason: None }).unwrap();
        assert_eq!(a.status, Status::Approved);
        let e = q
            .reply(
                &h.id,
                Reply::Deny {
                    reason: Some("no".into()),
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("already approved"), "{e}");
        let a = q
            .reply(
                &t.id,
                Reply::Answer {
                    text: "main".into(),
                },
            )
            .unwrap();
        assert_eq!(a.answer.as_deref(), Some("main"));
        assert_eq!(q.pending_count().unwrap(), 0);
        let views = q.views().unwrap();
        let of = |id: &str| views.iter().find(|v| v.request.id == id).unwrap();
        assert_eq!(of(&h.id).status, Status::Approved);
        assert_eq!(of(&t.id).status, Status::Answered);
        assert_eq!(of(&t.id).answer.as_deref(), Some("main"));
    }

    #[test]
    fn grants_are_marked_once() {
        let (_d, q) = queue();
        assert!(!q.is_marked_granted("abc"));
        q.mark_granted("abc").unwrap();
        q.mark_granted("abc").unwrap();
        assert!(q.is_marked_granted("abc"));
    }

    #[test]
    fn what_people_see_is_one_line() {
        let a = Ask::AllowDlp {
            rule: "jwt".into(),
            value: "a\nb".into(),
        };
        assert_eq!(a.what(), "jwt: a\\nb (3 bytes)");
        let long = Ask::Question {
            text: "x".repeat(300),
        };
        assert!(!long.what().contains('\n') && long.what().contains("cut"));
    }
}
