//! The undo stack: how a run takes down what it brought up.
//!
//! Each step of the bring-up pushes the undo of what it created, right after creating it.
//! [`UndoStack::unwind`] runs the undos in reverse order; it runs on an error, on a normal exit,
//! on Ctrl-C and on SIGTERM alike. An undo that fails is reported and the rest still run: a
//! network that cannot be removed must not keep the container before it from going.
//!
//! Things created by steps that ran at once, or by one step and independent of each other,
//! are undone at once: [`UndoStack::push_together`] pushes undos that run concurrently, and
//! [`UndoStack::push_stacks`] pushes whole stacks (filled by concurrent steps) that unwind
//! concurrently, each in its own reverse order. What was pushed before them still waits for
//! all of them: a run's networks go only after both of its containers.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use anyhow::Result;

pub type UndoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Each undo's name and result, in the order they ran.
type Results = Vec<(String, Result<()>)>;

/// One undo: what it removes, and the (lazy) future that removes it.
struct Undo {
    what: String,
    action: UndoFuture,
}

enum Entry {
    One(Undo),
    /// Stacks that unwind concurrently.
    Together(Vec<UndoStack>),
}

#[derive(Default)]
pub struct UndoStack {
    items: Vec<Entry>,
}

/// What an unwind did.
#[derive(Debug, Default)]
pub struct Unwound {
    /// The undos that ran, in the order they ran.
    pub done: Vec<String>,
    /// The undos that failed, with their errors.
    pub failed: Vec<(String, anyhow::Error)>,
    pub millis: u128,
}

impl UndoStack {
    pub fn new() -> UndoStack {
        UndoStack::default()
    }

    /// Pushes the undo of something just created. `action` does not run until unwound.
    pub fn push(
        &mut self,
        what: impl Into<String>,
        action: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        self.items.push(Entry::One(Undo {
            what: what.into(),
            action: Box::pin(action),
        }));
    }

    /// Pushes undos of independent things, to run concurrently when unwound.
    pub fn push_together(&mut self, undos: Vec<(String, UndoFuture)>) {
        let stacks = undos
            .into_iter()
            .map(|(what, action)| UndoStack {
                items: vec![Entry::One(Undo { what, action })],
            })
            .collect();
        self.push_stacks(stacks);
    }

    /// Pushes stacks to unwind concurrently (each in its own reverse order) before anything
    /// pushed earlier on this one.
    pub fn push_stacks(&mut self, stacks: Vec<UndoStack>) {
        let stacks: Vec<UndoStack> = stacks.into_iter().filter(|s| !s.is_empty()).collect();
        if !stacks.is_empty() {
            self.items.push(Entry::Together(stacks));
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Runs every undo, last pushed first; `report` then sees each failure.
    pub async fn unwind(&mut self, mut report: impl FnMut(&str, &anyhow::Error)) -> Unwound {
        let started = Instant::now();
        let mut out = Unwound::default();
        for (what, r) in std::mem::take(self).run().await {
            match r {
                Ok(()) => out.done.push(what),
                Err(e) => {
                    report(&what, &e);
                    out.failed.push((what, e));
                }
            }
        }
        out.millis = started.elapsed().as_millis();
        out
    }

    /// Unwinds, collecting each undo's result (boxed: `Together` recurses).
    fn run(mut self) -> Pin<Box<dyn Future<Output = Results> + Send>> {
        Box::pin(async move {
            let mut out = Vec::new();
            while let Some(entry) = self.items.pop() {
                match entry {
                    Entry::One(u) => {
                        let t = Instant::now();
                        let r = u.action.await;
                        tracing::debug!("undo: {} ({} ms)", u.what, t.elapsed().as_millis());
                        out.push((u.what, r));
                    }
                    Entry::Together(stacks) => {
                        let all =
                            futures_util::future::join_all(stacks.into_iter().map(UndoStack::run))
                                .await;
                        out.extend(all.into_iter().flatten());
                    }
                }
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn unwinds_in_reverse_and_past_failures() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stack = UndoStack::new();
        for name in ["network", "bundle", "guest"] {
            let log = log.clone();
            stack.push(format!("remove {name}"), async move {
                log.lock().unwrap().push(name);
                if name == "bundle" {
                    anyhow::bail!("engine said no");
                }
                Ok(())
            });
        }
        let mut reported = Vec::new();
        let out = stack
            .unwind(|what, e| reported.push(format!("{what}: {e}")))
            .await;
        assert_eq!(*log.lock().unwrap(), vec!["guest", "bundle", "network"]);
        assert_eq!(out.done, vec!["remove guest", "remove network"]);
        assert_eq!(out.failed.len(), 1);
        assert_eq!(reported, vec!["remove bundle: engine said no"]);
        assert!(stack.is_empty());
    }

    #[tokio::test]
    async fn stacks_unwind_together_before_what_came_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let entry = |name: &'static str| {
            let log = log.clone();
            async move {
                log.lock().unwrap().push(name);
                Ok(())
            }
        };
        let mut networks = UndoStack::new();
        networks.push_together(vec![
            ("net a".to_string(), Box::pin(entry("net a")) as UndoFuture),
            ("net b".to_string(), Box::pin(entry("net b")) as UndoFuture),
        ]);
        let mut bundle = UndoStack::new();
        bundle.push("bundle", entry("bundle"));
        let mut guest = UndoStack::new();
        guest.push("guest delete", entry("guest delete"));
        guest.push("guest stop", entry("guest stop"));
        networks.push_stacks(vec![bundle, guest, UndoStack::new()]);
        assert_eq!(networks.len(), 2);
        let out = networks.unwind(|_, _| {}).await;
        let got = log.lock().unwrap().clone();
        assert_eq!(got.len(), 5);
        let at = |n: &str| got.iter().position(|g| *g == n).unwrap();
        assert!(at("guest stop") < at("guest delete"));
        for net in ["net a", "net b"] {
            assert!(
                at(net) > at("guest delete") && at(net) > at("bundle"),
                "{got:?}"
            );
        }
        assert_eq!(out.done.len(), 5);
    }

    #[tokio::test]
    async fn undos_are_lazy() {
        let ran = Arc::new(Mutex::new(false));
        let mut stack = UndoStack::new();
        let r = ran.clone();
        stack.push("x", async move {
            *r.lock().unwrap() = true;
            Ok(())
        });
        assert!(!*ran.lock().unwrap());
        stack.unwind(|_, _| {}).await;
        assert!(*ran.lock().unwrap());
    }
}
