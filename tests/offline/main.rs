//! The tests that need no Docker Engine, in one binary: the layers of src/, the parsers under
//! proptest, the DLP corpus through the library, and the daemons run by the real `bottle
//! sidecar` on loopback with servers, clients, git and sshd of the test's own. Run them with
//! `cargo test --test offline`, one file with `cargo test --test offline daemon_pipelock::`.
//!
//! Each file here was its own test binary; tests of every file now run as threads of one
//! process, none of them touching process-wide state (environment, working folder, signal
//! dispositions). What needs the engine is in `tests/engine/`; `tests/reproducible.rs` keeps a
//! binary of its own.

/// Of the shared support (`tests/support/`), the part these tests use: a real sshd, and the
/// ports servers started here listen on.
#[path = "../support"]
mod support {
    pub mod ports;
    pub mod sshd;
}

mod encodings;
mod git_gate_kit;
mod pipelock_kit;

mod daemon_destinations;
mod daemon_dlp_bodies;
mod daemon_dlp_decode;
mod daemon_git_gate;
mod daemon_git_gate_bounds;
mod daemon_grants;
mod daemon_pipelock;
mod daemon_scrub;
mod daemon_supervise;
mod daemon_websocket;
mod dlp_corpus;
mod fuzz_parsers;
mod layers;
