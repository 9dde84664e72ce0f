//! The engines bottle drives: the Docker Engine (API) and smolvm (CLI).

pub mod docker;
pub mod docker_run;
pub mod smolvm;
