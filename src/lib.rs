//! bottle: a Nix-style build-then-run pipeline for coding-agent sandboxes.
//!
//! Data flows one way through one module per stage:
//!
//! ```text
//! recipe (TOML → Recipe) → plan (Plan) → hash (Keys → component hashes → BuildHash)
//!   → builder (the components the store lacks) → store (entries, components, verify, gc)
//!   → run (network → bundle → guest → chown → provision → command; an undo stack tears it down)
//! ```
//!
//! `digest` holds the typed blake3 values; `manifest` the contract between build and run (an
//! entry's manifest, component records, specs); `config` renders the config component from
//! its key; `diff` compares entries. `runtime/` talks to the engines (the Docker Engine API,
//! the smolvm CLI) and holds the guest either runs; `sidecar/` holds the bundle's daemons
//! (`bottle sidecar`, run inside the bundle image); `console` serves the local web page over
//! the run folders (`bottle console`); `cli` is the glue; `progress` draws it.

pub mod builder;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod console;
pub mod context;
pub mod daemons;
pub mod diff;
pub mod digest;
pub mod files;
pub mod hash;
pub mod manifest;
pub mod oci;
pub mod plan;
pub mod preflight;
pub mod prepare;
pub mod progress;
pub mod recipe;
pub mod run;
pub mod runtime;
pub mod share;
pub mod store;
pub mod text;
