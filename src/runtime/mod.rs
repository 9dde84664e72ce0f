//! The engines bottle drives: the Docker Engine (API) and smolvm (CLI), and the guest that
//! runs on either.

pub mod docker;
pub mod docker_exec;
pub mod docker_run;
pub mod guest;
pub mod images;
pub mod smolvm;
