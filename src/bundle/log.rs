//! The bundle's log: one line per event on stderr, prefixed with the daemon that says it.

use std::io::Write as _;

/// One log line on stderr, prefixed with who says it: formatted first, then written in one
/// `write` (stderr is unbuffered: `eprintln!` writes each piece of its format with a call of
/// its own, four per line, and pipelock logs a line per request). A failed write is dropped:
/// a closed stderr must not stop a daemon.
pub fn log(who: &str, line: impl std::fmt::Display) {
    let text = format!("{who}: {line}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
