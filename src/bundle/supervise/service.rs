//! supervise's state in the bundle: the run's requests and answers in memory (the queue's
//! files are the truth, read at start and as answers arrive), the filing of new requests with
//! their limits, the waiting for answers, and the grants.
//!
//! A person answers by writing `answers/ID.json` on the host; the daemon looks for new answer
//! files every [`POLL`], so a grant reaches pipelock within about that (the bundle's shared
//! state, [`Shared`], which pipelock reads on every request), and a waiting agent is woken.
//! Each grant is one `granted` line of the audit log, marked in the queue (`granted/ID`) so a
//! restarted bundle applies it again without recording it twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::bundle::audit::AuditLog;
use crate::bundle::log::log;
use crate::bundle::shared::{DlpGrant, Shared};
use crate::daemons::audit::Event;
use crate::daemons::supervise::MAX_PENDING;
use crate::daemons::supervise::queue::{Answer, Ask, Queue, QueueError, Request, Status, View};

const WHO: &str = "supervise";
/// How often the daemon looks for new answers.
pub const POLL: Duration = Duration::from_millis(100);
/// The most requests a run may file in all.
pub const MAX_REQUESTS: usize = 1000;

/// Why a request was not filed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "{count} requests already wait for a person (at most {MAX_PENDING}); wait for their answers (GET /v1/requests) before filing more"
    )]
    TooManyPending { count: usize },
    #[error("this run has filed {MAX_REQUESTS} requests, the most one run may")]
    Full,
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// The daemon's state, shared by its connections and its watcher.
pub struct Service {
    queue: Queue,
    shared: Arc<Shared>,
    audit: Option<AuditLog>,
    book: Mutex<Book>,
    /// Bumped whenever answers arrive: wakes the agents waiting for one.
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Book {
    requests: BTreeMap<String, Request>,
    answers: BTreeMap<String, Answer>,
    /// Answer files that cannot be used (unreadable, or for no request): not read again.
    ignored: BTreeSet<String>,
}

impl Book {
    fn view(&self, id: &str) -> Option<View> {
        let r = self.requests.get(id)?;
        Some(View::of(r.clone(), self.answers.get(id)))
    }

    fn pending(&self) -> usize {
        self.requests
            .keys()
            .filter(|id| !self.answers.contains_key(*id))
            .count()
    }
}

impl Service {
    /// Opens the queue (making its folders) and applies the grants already approved there.
    pub fn open(
        queue: Queue,
        shared: Arc<Shared>,
        audit: Option<AuditLog>,
    ) -> Result<Service, QueueError> {
        queue.prepare()?;
        let mut book = Book::default();
        for r in queue.requests()? {
            book.requests.insert(r.id.clone(), r);
        }
        let service = Service {
            queue,
            shared,
            audit,
            book: Mutex::new(book),
            changed: watch::Sender::new(0),
        };
        service.poll_answers()?;
        let book = service.book.lock().expect("book lock");
        log(
            WHO,
            format!(
                "queue {}: {} request(s), {} pending; {} grant(s) in force",
                service.queue.root().display(),
                book.requests.len(),
                book.pending(),
                service.granted_count(&book)
            ),
        );
        drop(book);
        Ok(service)
    }

    fn granted_count(&self, book: &Book) -> usize {
        book.answers
            .values()
            .filter(|a| a.status == Status::Approved)
            .filter(|a| book.requests.get(&a.id).is_some_and(|r| r.ask.is_grant()))
            .count()
    }

    /// Files `ask`; returns it as it stands and whether it is new. The same ask still
    /// pending, or a grant already approved, is returned instead of a new request.
    pub fn file(&self, ask: Ask, why: Option<String>) -> Result<(View, bool), FileError> {
        let mut book = self.book.lock().expect("book lock");
        let same = book
            .requests
            .values()
            .filter(|r| r.ask == ask)
            .map(|r| (r.id.clone(), book.answers.get(&r.id).map(|a| a.status)))
            .find(|(_, status)| match status {
                None => true,
                Some(s) => *s == Status::Approved && ask.is_grant(),
            });
        if let Some((id, _)) = same {
            return Ok((book.view(&id).expect("a known request"), false));
        }
        let count = book.pending();
        if count >= MAX_PENDING {
            return Err(FileError::TooManyPending { count });
        }
        if book.requests.len() >= MAX_REQUESTS {
            return Err(FileError::Full);
        }
        let request = self.queue.file(ask, why)?;
        log(
            WHO,
            format!(
                "request {} {} {} ({} pending)",
                request.id,
                request.ask.kind(),
                match &request.ask {
                    // Never the value in a log line.
                    Ask::AllowDlp { rule, .. } => format!("rule {rule}"),
                    other => other.what(),
                },
                count + 1
            ),
        );
        let id = request.id.clone();
        book.requests.insert(id.clone(), request);
        Ok((book.view(&id).expect("just filed"), true))
    }

    /// A request as it stands.
    pub fn view(&self, id: &str) -> Option<View> {
        self.book.lock().expect("book lock").view(id)
    }

    /// Every request, oldest first.
    pub fn views(&self) -> Vec<View> {
        let book = self.book.lock().expect("book lock");
        let mut all: Vec<View> = book
            .requests
            .keys()
            .filter_map(|id| book.view(id))
            .collect();
        all.sort_by(|a, b| {
            (a.request.time_ms, &a.request.id).cmp(&(b.request.time_ms, &b.request.id))
        });
        all
    }

    /// Request `id` once it is answered, or as it stands after `wait`.
    pub async fn wait(&self, id: &str, wait: Duration) -> Option<View> {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let view = self.view(id)?;
            if view.status != Status::Pending {
                return Some(view);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Some(view),
            }
        }
    }

    /// Looks for new answer files every [`POLL`], forever.
    pub async fn watch(self: Arc<Self>) {
        let mut failing = false;
        loop {
            tokio::time::sleep(POLL).await;
            match self.poll_answers() {
                Ok(_) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    log(WHO, format!("{e} (trying again)"));
                }
                Err(_) => {}
            }
        }
    }

    /// Reads the answers that arrived since the last look, applies their grants and wakes the
    /// agents waiting; returns how many arrived.
    pub fn poll_answers(&self) -> Result<usize, QueueError> {
        let ids = self.queue.answer_ids()?;
        let mut book = self.book.lock().expect("book lock");
        let fresh: Vec<String> = ids
            .into_iter()
            .filter(|id| !book.answers.contains_key(id) && !book.ignored.contains(id))
            .collect();
        let mut arrived = 0;
        for id in fresh {
            let answer = self.queue.answer(&id)?;
            let request = book.requests.get(&id).cloned();
            let (Some(answer), Some(request)) = (answer, request) else {
                log(
                    WHO,
                    format!(
                        "answers/{id}.json answers no request of this run, or is not an answer; ignored"
                    ),
                );
                book.ignored.insert(id);
                continue;
            };
            if answer.id != id || answer.status == Status::Pending {
                log(
                    WHO,
                    format!("answers/{id}.json is not an answer to {id}; ignored"),
                );
                book.ignored.insert(id);
                continue;
            }
            log(WHO, format!("request {id} {}", answer.status.name()));
            if answer.status == Status::Approved && request.ask.is_grant() {
                self.grant(&request);
            }
            book.answers.insert(id, answer);
            arrived += 1;
        }
        drop(book);
        if arrived > 0 {
            self.changed.send_modify(|n| *n += 1);
        }
        Ok(arrived)
    }

    /// Puts an approved request's grant in force for pipelock and, the first time, in the
    /// audit log.
    fn grant(&self, request: &Request) {
        let what = match &request.ask {
            Ask::AllowHost { host } => {
                let granted = host.clone();
                self.shared.update(|g| g.hosts.push(granted));
                host.clone()
            }
            Ask::AllowDlp { rule, value } => {
                let grant = DlpGrant {
                    rule: rule.clone(),
                    value: value.clone(),
                };
                self.shared.update(|g| g.dlp.push(grant));
                format!("dlp:{rule}")
            }
            Ask::Question { .. } => return,
        };
        if self.queue.is_marked_granted(&request.id) {
            return;
        }
        if let Some(audit) = &self.audit {
            audit.record(&Event::granted(audit.run(), &what, &request.id));
        }
        if let Err(e) = self.queue.mark_granted(&request.id) {
            log(
                WHO,
                format!("{e}: the grant may be recorded again after a restart"),
            );
        }
    }
}
