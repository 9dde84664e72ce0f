//! DLP: finds credentials in what the guest sends — the URL, each header, the body — before
//! anything leaves the bundle (and before egress injects a real token, so an injected token
//! never trips it). A finding names its rule, never the secret.
//!
//! NOTE: the rules are not written yet; [`Scanner`] finds nothing. The API is what pipelock
//! codes against.

use std::sync::Arc;

use anyhow::Result;

use super::pipelock::Dlp;

/// A credential found: the id of the rule that matched (what a refusal and the audit log
/// name). Never the matched bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
}

/// The compiled rules: the built-in catalogue and the recipe's, minus its allowed values.
#[derive(Debug)]
pub struct Scanner {
    _private: (),
}

impl Scanner {
    /// Compiles the rules DLP is configured with (`None` when DLP is off).
    pub fn new(dlp: &Dlp) -> Result<Option<Arc<Scanner>>> {
        if !dlp.enabled {
            return Ok(None);
        }
        Ok(Some(Arc::new(Scanner { _private: () })))
    }

    /// Scans one whole value: a request target, or one header as `Name: value`.
    pub fn scan(&self, _bytes: &[u8]) -> Option<Finding> {
        None
    }

    /// A scanner for a body that arrives in chunks: it keeps a bounded window of the previous
    /// chunk so a secret split across two chunks is found.
    pub fn body(self: &Arc<Self>) -> BodyScanner {
        BodyScanner {
            _scanner: self.clone(),
        }
    }
}

/// Scans a body chunk by chunk with bounded memory.
#[derive(Debug)]
pub struct BodyScanner {
    _scanner: Arc<Scanner>,
}

impl BodyScanner {
    /// Feeds the next chunk; a finding means the request must be refused.
    pub fn feed(&mut self, _chunk: &[u8]) -> Option<Finding> {
        None
    }

    /// The end of the body.
    pub fn finish(&mut self) -> Option<Finding> {
        None
    }
}
