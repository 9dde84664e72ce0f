//! bottle: a Nix-style build-then-run pipeline for coding-agent sandboxes.
//!
//! Data flows one way through one module per stage:
//!
//! ```text
//! recipe (TOML → Recipe) → plan (Plan) → hash (BuildKey → BuildHash) → build → store (Manifest)
//!   → run (network → bundle → guest → chown → provision → command; an undo stack tears it down)
//! ```
//!
//! `runtime/` talks to the engines (the Docker Engine API, the smolvm CLI); `sidecar/` holds the
//! bundle's daemons (`bottle sidecar`, run inside the bundle image); `cli` is the glue.

pub mod build;
pub mod cli;
pub mod context;
pub mod digest;
pub mod hash;
pub mod manifest;
pub mod plan;
pub mod progress;
pub mod recipe;
pub mod run;
pub mod runtime;
pub mod sidecar;
pub mod store;
