//! The tests that need the Docker Engine (and what `scripts/setup --tests` installs: smolvm,
//! nginx, sshd, Garage, chromium…), in one binary: builds, runs, sharing and the store, against
//! the real engine through the real `bottle` binary. Run them with `cargo test --test engine`,
//! one file with `cargo test --test engine share_cache::`.
//!
//! Each file here was its own test binary; tests of every file now run as threads of one
//! process. The shared context (`tests/support/`) keeps them apart in the engine: names and
//! build contexts unique per test, and one process-wide lock between builds and image removal
//! (see its module doc). `tests/reproducible.rs` prunes the engine's build cache, so it keeps a
//! binary of its own (cargo runs test binaries one after another); so do
//! `tests/share_hostile.rs`, `tests/share_s3.rs` and `tests/share_transfers.rs`, which measure
//! a child's peak memory with `wait4`, where a child starts from its parent's peak (their
//! module docs say more).

#[path = "../support/mod.rs"]
mod support;

mod build_context;
mod build_pipeline;
mod bundle_image;
mod claude_tui;
mod cli_names;
mod console;
mod golden_hash;
mod oci_archives;
mod preflight;
mod regression;
mod run_bundle_memory;
mod run_claude;
mod run_demo;
mod run_faults;
mod run_git_gate;
mod run_network;
mod run_secrets;
mod run_smolvm;
mod run_supervise;
mod run_tools_guest;
mod run_traffic;
mod share_cache;
mod share_http;
mod share_refusals;
mod store_components;
mod store_default;
mod store_key_fields;
