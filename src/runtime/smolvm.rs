//! smolvm, through its CLI with `--error-format json`.
//!
//! This module owns finding the CLI (`BOTTLE_SMOLVM`, else `smolvm` on `PATH`), running it
//! with `--state-dir` when one is set (tests keep their machines apart that way), and turning
//! its stable JSON error codes into messages that say what to do.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;
use tokio::process::Command;

#[derive(Debug, Clone)]
pub struct Smolvm {
    pub bin: PathBuf,
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct ErrorDoc {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
}

impl Smolvm {
    /// Finds the CLI: `BOTTLE_SMOLVM`, else `smolvm` on `PATH`. `BOTTLE_SMOLVM_STATE_DIR`
    /// sets `--state-dir`.
    pub fn locate() -> Result<Smolvm> {
        let state_dir = std::env::var_os("BOTTLE_SMOLVM_STATE_DIR").map(PathBuf::from);
        if let Some(bin) = std::env::var_os("BOTTLE_SMOLVM") {
            return Ok(Smolvm {
                bin: PathBuf::from(bin),
                state_dir,
            });
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let cand = dir.join("smolvm");
            if cand.is_file() {
                return Ok(Smolvm {
                    bin: cand,
                    state_dir,
                });
            }
        }
        Err(anyhow!(
            "the smolvm CLI is not on PATH: install it (`pip install smolmachines`, then copy smol/smol-vmm to smol/smolvm beside its libkrun; see README.md) or set BOTTLE_SMOLVM to its path"
        ))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args);
        cmd.arg("--error-format").arg("json");
        if let Some(dir) = &self.state_dir {
            cmd.arg("--state-dir").arg(dir);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs one CLI call; a failure becomes an error naming the call and what to do.
    pub async fn run(&self, what: &str, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .output()
            .await
            .with_context(|| format!("cannot run {} for {what}", self.bin.display()))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(anyhow!("smolvm {what} failed: {}", explain(&stderr)))
    }

    /// `smolvm pack create --image ARCHIVE --output OUT`: writes OUT and OUT.smolmachine.
    pub async fn pack_create(&self, archive: &Path, output: &Path) -> Result<()> {
        let archive = archive.to_string_lossy();
        let output = output.to_string_lossy();
        self.run(
            "pack create",
            &["pack", "create", "--image", &archive, "--output", &output],
        )
        .await
        .map(|_| ())
    }
}

/// A message for smolvm's stderr: its JSON error, with advice for the stable codes.
pub fn explain(stderr: &str) -> String {
    let doc = stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<ErrorDoc>(l.trim()).ok());
    let Some(doc) = doc else {
        let text = stderr.trim();
        return if text.is_empty() {
            "no message".to_string()
        } else {
            text.to_string()
        };
    };
    let advice = match doc.error.code.as_str() {
        "KVM_UNAVAILABLE" => {
            "; this host cannot run microVMs: check that /dev/kvm exists and is readable (`chmod 666 /dev/kvm`), or use a `docker` guest"
        }
        "NOT_FOUND" => "; the machine or file it names does not exist",
        "ALREADY_EXISTS" => {
            "; a machine of that name exists: `bottle down` removes what an earlier run left"
        }
        "PERMISSION_DENIED" => "; run as a user allowed to use /dev/kvm",
        _ => "",
    };
    format!("{} [{}]{advice}", doc.error.message.trim(), doc.error.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_json_errors() {
        let s = "noise\n{\"error\":{\"code\":\"KVM_UNAVAILABLE\",\"message\":\"no kvm\"}}\n";
        let m = explain(s);
        assert!(
            m.starts_with("no kvm [KVM_UNAVAILABLE]; this host cannot run microVMs"),
            "{m}"
        );
        assert_eq!(explain("plain text\n"), "plain text");
    }
}
