//! The undo stack: how a run takes down what it brought up.
//!
//! Each step of the bring-up pushes the undo of what it created, right after creating it.
//! [`UndoStack::unwind`] runs the undos in reverse order; it runs on an error, on a normal exit,
//! on Ctrl-C and on SIGTERM alike. An undo that fails is reported and the rest still run: a
//! network that cannot be removed must not keep the container before it from going.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use anyhow::Result;

type UndoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// One undo: what it removes, and the (lazy) future that removes it.
struct Undo {
    what: String,
    action: UndoFuture,
}

#[derive(Default)]
pub struct UndoStack {
    items: Vec<Undo>,
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
        self.items.push(Undo {
            what: what.into(),
            action: Box::pin(action),
        });
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Runs every undo, last pushed first. `report` sees each failure as it happens.
    pub async fn unwind(&mut self, mut report: impl FnMut(&str, &anyhow::Error)) -> Unwound {
        let started = Instant::now();
        let mut out = Unwound::default();
        while let Some(undo) = self.items.pop() {
            tracing::debug!("undo: {}", undo.what);
            match undo.action.await {
                Ok(()) => out.done.push(undo.what),
                Err(e) => {
                    report(&undo.what, &e);
                    out.failed.push((undo.what, e));
                }
            }
        }
        out.millis = started.elapsed().as_millis();
        out
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
