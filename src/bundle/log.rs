//! The bundle's log: one line per event on stderr, prefixed with the daemon that says it.

/// One log line on stderr, prefixed with who says it.
pub fn log(who: &str, line: impl std::fmt::Display) {
    eprintln!("{who}: {line}");
}
