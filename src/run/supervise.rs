//! The host's side of supervise: a run's queue (`runs/RUNID/supervise/`, which the bundle
//! mounts), read and answered by `bottle supervise`, and counted by `bottle ps`. An answer is a
//! file the bundle's supervise picks up within a tenth of a second ([`crate::bundle::supervise`]).

use anyhow::Result;

use super::record::{self, RunRecord};
use crate::daemons::supervise::QUEUE_RUN_DIR;
use crate::daemons::supervise::queue::{Answer, Queue, Reply, View};
use crate::store::Store;

/// Why a run's queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunQueueError {
    #[error(
        "run {run_id} has no supervise queue: its recipe does not enable supervise ([supervise] enabled = true), or its bundle has not started yet"
    )]
    NoQueue { run_id: String },
    #[error(
        "run {run_id} is not live (its process {pid} ended): nothing would act on an answer; `bottle down {run_id}` removes what it left"
    )]
    NotLive { run_id: String, pid: u32 },
}

/// A run and its queue.
pub struct RunQueue {
    pub record: RunRecord,
    pub queue: Queue,
}

impl RunQueue {
    /// The queue of the run `id` names (a run id or a unique prefix of one).
    pub fn open(store: &Store, id: &str) -> Result<RunQueue> {
        let record = record::find(store, id)?;
        let queue = queue_of(store, &record.run_id);
        if !queue.root().is_dir() {
            return Err(RunQueueError::NoQueue {
                run_id: record.run_id,
            }
            .into());
        }
        Ok(RunQueue { record, queue })
    }

    pub fn run_id(&self) -> &str {
        &self.record.run_id
    }

    /// Whether the run is still going (a watch ends when it is not).
    pub fn is_live(&self) -> bool {
        self.record.is_live() && self.queue.root().is_dir()
    }

    /// The requests waiting for an answer, oldest first; all of them with `all`.
    pub fn list(&self, all: bool) -> Result<Vec<View>> {
        let views = self.queue.views()?;
        Ok(views
            .into_iter()
            .filter(|v| all || v.status == crate::daemons::supervise::queue::Status::Pending)
            .collect())
    }

    /// Answers request `id`: refused for a run that is not live, an unknown or answered id, an
    /// approved question or an answered grant.
    pub fn reply(&self, id: &str, reply: Reply) -> Result<(View, Answer)> {
        if !self.record.is_live() {
            return Err(RunQueueError::NotLive {
                run_id: self.record.run_id.clone(),
                pid: self.record.pid,
            }
            .into());
        }
        let answer = self.queue.reply(id.trim(), reply)?;
        let request = self
            .queue
            .request(&answer.id)?
            .expect("an answered request exists");
        Ok((View::of(request, Some(&answer)), answer))
    }
}

/// The queue folder of run `run_id`.
pub fn queue_of(store: &Store, run_id: &str) -> Queue {
    Queue::new(record::run_dir(store, run_id).join(QUEUE_RUN_DIR))
}

/// How many of run `run_id`'s requests wait for a person; `None` when it has no queue.
pub fn pending_count(store: &Store, run_id: &str) -> Option<usize> {
    let queue = queue_of(store, run_id);
    if !queue.root().is_dir() {
        return None;
    }
    queue.pending_count().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemons::supervise::queue::Ask;

    #[test]
    fn a_run_without_a_queue_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let r = record::new_record("r1", None, "demo", crate::plan::GuestBackend::Docker, None);
        r.save(&store).unwrap();
        let e = RunQueue::open(&store, "r1").err().unwrap().to_string();
        assert!(e.contains("[supervise] enabled = true"), "{e}");
        assert_eq!(pending_count(&store, "r1"), None);
        let q = queue_of(&store, "r1");
        q.prepare().unwrap();
        q.file(
            Ask::AllowHost {
                host: "a.test".into(),
            },
            None,
        )
        .unwrap();
        assert_eq!(pending_count(&store, "r1"), Some(1));
        let rq = RunQueue::open(&store, "r").unwrap();
        assert_eq!(rq.list(false).unwrap().len(), 1);
    }
}
