//! The config component's file names, and a rendered file: what the rest of the build and
//! the run name in it.

use serde::Serialize;

/// Where the guest finds the run's CA; the trust trio points here.
pub const GUEST_CA_PATH: &str = "/etc/bottle/ca.crt";

/// Paths of the config component's files besides the daemons' (whose files their modules
/// name: `pipelock.json`, ...).
pub mod paths {
    pub const GUEST_SPEC: &str = "guest.json";
    pub const BUNDLE_SPEC: &str = "bundle.json";
    pub const PROMPT: &str = "provision/prompt.md";
    pub const SKILLS: &str = "provision/skills";
    /// `[provision] files`, each at its guest path under this folder.
    pub const FILES: &str = "provision/files";
}

/// File names in a run's CA folder (see `run::ca`).
pub mod ca_files {
    pub const PIPELOCK_CERT: &str = "pipelock.crt";
    pub const PIPELOCK_KEY: &str = "pipelock.key";
}

/// One rendered file of the component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

/// A value as a pretty JSON file, newline-terminated.
pub fn json_file(path: &str, value: &impl Serialize) -> RenderedFile {
    let mut bytes = serde_json::to_vec_pretty(value).expect("config values serialize");
    bytes.push(b'\n');
    RenderedFile {
        path: path.to_string(),
        bytes,
        mode: 0o644,
    }
}
