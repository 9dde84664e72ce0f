//! The engines bottle drives: the Docker Engine (API) and smolvm (CLI), and the guest that
//! runs on either.

pub mod docker;
pub mod docker_exec;
pub mod docker_run;
pub mod guest;
pub mod images;
pub mod smolvm;

/// A file to place in the guest: its absolute path there, its bytes and its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIn {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}
