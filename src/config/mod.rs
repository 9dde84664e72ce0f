//! The config component: the daemons' config files, the guest and bundle specs, and the
//! provisioning files, all rendered from a [`ConfigKey`](crate::hash::ConfigKey).
//!
//! Rendering is a pure function of the key (and [`crate::hash::CONFIG_FORMAT`] versions its
//! shape), so a config component is checked by rendering its key again: `verify` and `run`
//! refuse a `guest.json` that says `root` where the key says `node`. The provisioning files
//! (prompt, skills) are copies of recipe files whose digests the key holds.
//!
//! Everything here holds no secret: token env vars appear by name, identity keys by host
//! path. Each daemon's config file, mounts and guest files come from its module here, through
//! [`daemons`], over the contract in `crate::daemons`; the CA files are minted per run on the
//! machine that runs (`run::ca`) and mounted from the run's folder.
//!
//! | module | owns |
//! | --- | --- |
//! | [`render`](mod@render) | a key rendered: the specs, the guest's env, every file of the component |
//! | [`daemon`] | one daemon's build-time half ([`daemon::Render`]): its config, files, mounts, env, secrets and guest files; each daemon's is its module ([`pipelock`], [`git_gate`], [`supervise`]) |
//! | [`daemons`] | the running daemons' halves taken together, through the registry |
//! | [`files`] | the component's file names and [`RenderedFile`] |
//! | [`json`] | JSON documents compared field by field |

pub mod daemon;
pub mod daemons;
pub mod files;
pub mod git_gate;
pub mod json;
pub mod pipelock;
pub mod render;
pub mod supervise;

pub use files::{GUEST_CA_PATH, RenderedFile, ca_files, paths};
pub use json::{differing_fields, flatten};
pub use render::{Rendered, copied_files, render};
