//! The build phase end to end: the real `bottle` binary against the real Docker Engine.
//!
//! By topic: [`hashing`] (what an entry's hash depends on, and what it does not),
//! [`integrity`] (entries and components whole under concurrent builds and SIGKILL, and
//! `bottle verify` naming damage), [`secrets`] (no private key or token value in the store),
//! [`failures`] (errors that name where, and leave the store as it was), [`store_commands`]
//! (gc, diff, ls and show, and a closed stdout).

mod failures;
mod hashing;
mod integrity;
mod secrets;
mod store_commands;
