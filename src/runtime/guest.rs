//! A running guest, however it runs: a container of the Docker Engine or a smolvm machine.
//! The run phase and `bottle exec` speak to the guest through this one type.

use std::path::Path;

use anyhow::{Context, Result, bail};
use bollard::Docker;

use super::docker_exec::{self as engine, ExecSpec};
use super::docker_run;
use super::smolvm::Smolvm;

#[derive(Clone)]
pub enum Guest {
    Docker { docker: Docker, container: String },
    Smolvm { smolvm: Smolvm, machine: String },
}

/// What a command in the guest printed and how it ended.
pub struct Output {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

fn kv(env: &[(String, String)]) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

impl Guest {
    /// Runs a command to completion, collecting its output. `env` is the whole guest env:
    /// env given at creation does not reach exec'd processes.
    pub async fn exec(
        &self,
        user: &str,
        workdir: Option<&str>,
        env: &[(String, String)],
        cmd: &[String],
    ) -> Result<Output> {
        match self {
            Guest::Docker { docker, container } => {
                let env = kv(env);
                let c = engine::exec_capture(
                    docker,
                    &ExecSpec {
                        container,
                        user,
                        workdir,
                        env: &env,
                        cmd,
                    },
                )
                .await?;
                Ok(Output {
                    code: c.code,
                    stdout: c.stdout,
                    stderr: c.stderr,
                })
            }
            Guest::Smolvm { smolvm, machine } => {
                let o = smolvm
                    .machine_exec(machine, user, workdir, env, cmd)
                    .await?;
                Ok(Output {
                    code: o.code as i64,
                    stdout: o.stdout,
                    stderr: o.stderr,
                })
            }
        }
    }

    /// Runs a command attached to bottle's terminal (a TTY when stdin and stdout are one);
    /// returns its exit code.
    pub async fn exec_attached(
        &self,
        user: &str,
        workdir: Option<&str>,
        env: &[(String, String)],
        cmd: &[String],
    ) -> Result<i64> {
        use std::io::IsTerminal;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        // On a terminal the guest's programs learn its type as ssh's do: the host's TERM,
        // unless the guest env sets one.
        let mut env = env.to_vec();
        if tty
            && !env.iter().any(|(k, _)| k == "TERM")
            && let Ok(term) = std::env::var("TERM")
        {
            env.push(("TERM".to_string(), term));
        }
        let env = &env[..];
        match self {
            Guest::Docker { docker, container } => {
                let env = kv(env);
                engine::exec_attached(
                    docker,
                    &ExecSpec {
                        container,
                        user,
                        workdir,
                        env: &env,
                        cmd,
                    },
                )
                .await
            }
            Guest::Smolvm { smolvm, machine } => {
                let code = smolvm
                    .machine_exec_attached(machine, user, workdir, env, cmd, tty)
                    .await?;
                Ok(code as i64)
            }
        }
    }

    /// Writes files (guest path, bytes, mode) into the guest, owned by root. `scratch` is a
    /// host folder for staging them where a CLI must copy from files.
    pub async fn put_files(
        &self,
        files: &[super::FileIn],
        env: &[(String, String)],
        scratch: &Path,
    ) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        match self {
            Guest::Docker { docker, container } => {
                docker_run::upload(docker, container, docker_run::tar_of(files)?).await
            }
            Guest::Smolvm { smolvm, machine } => {
                let mut mkdir = vec!["mkdir".to_string(), "-p".to_string()];
                for f in files {
                    if let Some(parent) = Path::new(&f.path).parent() {
                        mkdir.push(parent.to_string_lossy().into_owned());
                    }
                }
                mkdir.sort();
                mkdir.dedup();
                let out = self.exec("0", None, env, &mkdir).await?;
                if out.code != 0 {
                    bail!(
                        "`mkdir -p` in the guest exited {}: {}",
                        out.code,
                        out.stderr.trim()
                    );
                }
                std::fs::create_dir_all(scratch)?;
                for (i, f) in files.iter().enumerate() {
                    let staged = scratch.join(format!("file-{i}"));
                    std::fs::write(&staged, &f.bytes)
                        .with_context(|| format!("cannot write {}", staged.display()))?;
                    smolvm.machine_cp(&staged, machine, &f.path, f.mode).await?;
                    let _ = std::fs::remove_file(&staged);
                }
                Ok(())
            }
        }
    }
}
