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

use crate::plan::GuestStart;

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
            "the smolvm CLI is not on PATH: install it (`pip install smolmachines`, then copy smol/smol-vmm to smol/smolvm beside its libkrun, as `scripts/setup --tests` does) or set BOTTLE_SMOLVM to its path"
        ))
    }

    /// `smolvm --version` when a guest that starts as `start` depends on it (from a pack), for
    /// its key (`crate::hash::keys`); `None`, running nothing, when it starts from an image.
    pub fn pack_version(start: GuestStart) -> Result<Option<String>> {
        match start {
            GuestStart::Image => Ok(None),
            GuestStart::Pack => Smolvm::locate()
                .and_then(|s| s.version())
                .map(Some)
                .context("a smolvm guest started from a pack depends on the smolvm CLI's version, and it cannot be read"),
        }
    }

    /// `smolvm --version`, e.g. `smolvm 1.32.2`: what a pack depends on (part of a guest's
    /// key when it starts from a pack).
    pub fn version(&self) -> Result<String> {
        let out = std::process::Command::new(&self.bin)
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {} --version", self.bin.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || text.is_empty() {
            return Err(anyhow!(
                "{} --version printed no version: {}",
                self.bin.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(text)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        // The global flags go before a `--`: what follows it is the guest's command line.
        let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        cmd.args(&args[..split]);
        cmd.arg("--error-format").arg("json");
        if let Some(dir) = &self.state_dir {
            cmd.arg("--state-dir").arg(dir);
        }
        cmd.args(&args[split..]);
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
        Err(SmolvmError::new(what, &String::from_utf8_lossy(&out.stderr)).into())
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

/// Where a machine's root filesystem comes from.
pub enum MachineSource<'a> {
    /// A `docker save` archive (`--image ARCHIVE`).
    Image(&'a Path),
    /// A `.smolmachine` pack (`--from PACK`).
    Pack(&'a Path),
}

/// `smolvm machine create`: the guest restricted to `allow_cidr`, with `env` on its workload.
pub struct MachineCreate<'a> {
    pub name: &'a str,
    pub source: MachineSource<'a>,
    pub allow_cidr: &'a str,
    pub env: &'a [(String, String)],
    pub labels: &'a [(String, String)],
}

/// What an exec printed and its exit code.
pub struct ExecOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Smolvm {
    pub async fn machine_create(&self, c: &MachineCreate<'_>) -> Result<()> {
        let mut args: Vec<String> = vec![
            "machine".into(),
            "create".into(),
            "--name".into(),
            c.name.into(),
        ];
        match c.source {
            MachineSource::Image(p) => {
                args.push("--image".into());
                args.push(p.to_string_lossy().into_owned());
            }
            MachineSource::Pack(p) => {
                args.push("--from".into());
                args.push(p.to_string_lossy().into_owned());
            }
        }
        args.push("--allow-cidr".into());
        args.push(c.allow_cidr.into());
        for (k, v) in c.env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        for (k, v) in c.labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("machine create", &refs).await.map(|_| ())
    }

    pub async fn machine_start(&self, name: &str) -> Result<()> {
        self.run("machine start", &["machine", "start", "--name", name])
            .await
            .map(|_| ())
    }

    /// Stops a machine at once; a machine that is gone or not running is no error.
    pub async fn machine_stop(&self, name: &str) -> Result<()> {
        match self
            .run(
                "machine stop",
                &["machine", "stop", "--name", name, "--timeout", "0"],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes a machine; a machine that is gone is no error.
    pub async fn machine_delete(&self, name: &str) -> Result<()> {
        match self
            .run(
                "machine delete",
                &["machine", "delete", "--name", name, "--force"],
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if gone(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `machine ls --json`: one JSON object per machine.
    pub async fn machine_ls(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.run("machine ls", &["machine", "ls", "--json"]).await?;
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .map_err(|e| anyhow!("smolvm machine ls --json printed no JSON list: {e}"))?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    fn exec_args(
        name: &str,
        user: &str,
        workdir: Option<&str>,
        env: &[(String, String)],
    ) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "machine".into(),
            "exec".into(),
            "--name".into(),
            name.into(),
            "--user".into(),
            user.into(),
        ];
        if let Some(w) = workdir {
            args.push("--workdir".into());
            args.push(w.into());
        }
        // Env given at create time does not reach exec'd processes: the whole guest env, always.
        for (k, v) in env {
            args.push("-e".into());
            args.push(format!("{k}={v}"));
        }
        args
    }

    /// Runs a command in a machine to completion, collecting its output. A failure of smolvm
    /// itself (its JSON error on stderr) is an error; the command's own exit code is not.
    pub async fn machine_exec(
        &self,
        name: &str,
        user: &str,
        workdir: Option<&str>,
        env: &[(String, String)],
        cmd: &[String],
    ) -> Result<ExecOutput> {
        let mut args = Smolvm::exec_args(name, user, workdir, env);
        args.push("--".into());
        args.extend(cmd.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self
            .command(&refs)
            .output()
            .await
            .with_context(|| format!("cannot run {} for machine exec", self.bin.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() && json_error(&stderr).is_some() {
            return Err(SmolvmError::new("machine exec", &stderr).into());
        }
        Ok(ExecOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        })
    }

    /// Runs a command in a machine with bottle's stdin, stdout and stderr (`-i`, and `-t` when
    /// `tty`); returns its exit code.
    pub async fn machine_exec_attached(
        &self,
        name: &str,
        user: &str,
        workdir: Option<&str>,
        env: &[(String, String)],
        cmd: &[String],
        tty: bool,
    ) -> Result<i32> {
        let mut args = Smolvm::exec_args(name, user, workdir, env);
        args.push("--interactive".into());
        if tty {
            args.push("--tty".into());
        }
        args.push("--".into());
        args.extend(cmd.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.command(&refs);
        command
            .stdin(Stdio::inherit())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        let status = command
            .status()
            .await
            .with_context(|| format!("cannot run {} for machine exec", self.bin.display()))?;
        Ok(status.code().unwrap_or(-1))
    }

    /// Copies a host file into a machine at `guest_path`, owned by root with `mode`.
    pub async fn machine_cp(
        &self,
        local: &Path,
        name: &str,
        guest_path: &str,
        mode: u32,
    ) -> Result<()> {
        let src = local.to_string_lossy();
        let dst = format!("{name}:{guest_path}");
        let mode = format!("{mode:o}");
        self.run(
            "machine cp",
            &["machine", "cp", "--mode", &mode, &src, &dst],
        )
        .await
        .map(|_| ())
    }
}

/// A failed smolvm CLI call: which call, smolvm's stable error code (when it printed its JSON
/// error) and its message.
#[derive(Debug, thiserror::Error)]
#[error("smolvm {what} failed: {}", explain_parts(.code.as_deref(), .message))]
pub struct SmolvmError {
    pub what: String,
    pub code: Option<String>,
    pub message: String,
}

impl SmolvmError {
    fn new(what: &str, stderr: &str) -> SmolvmError {
        match json_error(stderr) {
            Some(doc) => SmolvmError {
                what: what.to_string(),
                code: Some(doc.error.code),
                message: doc.error.message.trim().to_string(),
            },
            None => SmolvmError {
                what: what.to_string(),
                code: None,
                message: stderr.trim().to_string(),
            },
        }
    }

    /// The machine is gone, or not running: nothing left to stop or delete.
    pub fn is_gone(&self) -> bool {
        self.code.as_deref() == Some("NOT_FOUND")
            || self.message.contains("not running")
            || self.message.contains("not found")
    }
}

/// Whether an error says the machine is gone or not running.
fn gone(e: &anyhow::Error) -> bool {
    e.downcast_ref::<SmolvmError>()
        .is_some_and(SmolvmError::is_gone)
}

/// smolvm's JSON error document on stderr, if there is one.
fn json_error(stderr: &str) -> Option<ErrorDoc> {
    stderr
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<ErrorDoc>(l.trim()).ok())
}

/// A message for smolvm's stderr: its JSON error, with advice for the stable codes.
pub fn explain(stderr: &str) -> String {
    let e = SmolvmError::new("", stderr);
    explain_parts(e.code.as_deref(), &e.message)
}

fn explain_parts(code: Option<&str>, message: &str) -> String {
    let Some(code) = code else {
        return if message.is_empty() {
            "no message".to_string()
        } else {
            message.to_string()
        };
    };
    let advice = match code {
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
    format!("{message} [{code}]{advice}")
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
