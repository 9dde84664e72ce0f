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
//! The modules stand in layers; each names only itself and modules of the layers below it,
//! and `tests/offline/layers.rs` keeps it so (`scripts/import-cycles` lists the circles left inside a
//! folder):
//!
//! ```text
//! cli                                         the command line: glue, and what it prints
//! console · preflight · prepare               the web console; checks before a run; `[guest] prepare`
//! builder · bundle · diff · run · share       build, the bundle's servers, compare, run, remote caches
//! store                                       entries, components, verify, gc
//! config · runtime                            the config component rendered; the engines
//! manifest · oci                              build↔run contract; image archives
//! hash                                        keys and hashes (pure: no engine, no file it did not get)
//! context                                     build contexts and Dockerfiles
//! plan                                        a recipe checked and normalized
//! recipe                                      the TOML a person writes
//! daemons · digest · files · text · progress  the daemons' contract; leaves
//! ```
//!
//! `daemons` is the contract between the build, the run and the bundle: each daemon's typed
//! config, port and the files the host and the bundle share (the audit line, the supervise
//! queue). `config` renders each daemon's half of an entry from its key; `bundle` holds the
//! servers (`bottle sidecar`, run inside the bundle image) and names nothing but `daemons`.
//! `digest` holds the typed blake3 values; `manifest` an entry's manifest, component records
//! and specs; `runtime` talks to the engines (the Docker Engine API, the smolvm CLI);
//! `console` serves the local web page over the run folders; `progress` draws.
//!
//! These docs are for people working on bottle: module docs name the private items a reader
//! of the code meets, so read them with `cargo doc --document-private-items`.

// The links above and in every module doc reach private items on purpose (see above).
#![allow(rustdoc::private_intra_doc_links)]

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
