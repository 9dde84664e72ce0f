//! Execs into a container guest, through the Docker Engine API: a command run to completion
//! with its output collected, or attached to bottle's terminal (raw mode, the terminal's size
//! passed on and kept up to date, stdin pumped in). The whole guest env goes with every exec.

use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

/// What a command printed and how it ended.
pub struct Captured {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// An exec into a running container.
pub struct ExecSpec<'a> {
    pub container: &'a str,
    pub user: &'a str,
    pub workdir: Option<&'a str>,
    /// The whole guest env, `K=V`, re-passed on every exec.
    pub env: &'a [String],
    pub cmd: &'a [String],
}

/// An exec of `spec` with stdout and stderr attached, and stdin when `stdin`.
fn exec_options(spec: &ExecSpec<'_>, stdin: bool) -> CreateExecOptions<String> {
    CreateExecOptions {
        attach_stdin: Some(stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        env: Some(spec.env.to_vec()),
        cmd: Some(spec.cmd.to_vec()),
        user: Some(spec.user.to_string()),
        working_dir: spec.workdir.map(str::to_string),
        ..Default::default()
    }
}

/// Runs a command to completion, collecting its output.
pub async fn exec_capture(docker: &Docker, spec: &ExecSpec<'_>) -> Result<Captured> {
    let created = docker
        .create_exec(spec.container, exec_options(spec, false))
        .await
        .map_err(|e| anyhow!("cannot exec in {}: {e}", spec.container))?;
    let mut captured = Captured {
        code: -1,
        stdout: String::new(),
        stderr: String::new(),
    };
    if let StartExecResults::Attached { mut output, .. } = docker
        .start_exec(&created.id, None)
        .await
        .map_err(|e| anyhow!("cannot exec in {}: {e}", spec.container))?
    {
        while let Some(item) = output.next().await {
            match item.map_err(|e| anyhow!("exec in {}: {e}", spec.container))? {
                LogOutput::StdErr { message } => {
                    captured.stderr.push_str(&String::from_utf8_lossy(&message))
                }
                other => captured
                    .stdout
                    .push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
    }
    captured.code = exit_code(docker, &created.id).await?;
    Ok(captured)
}

async fn exit_code(docker: &Docker, exec_id: &str) -> Result<i64> {
    for _ in 0..100 {
        let info = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|e| anyhow!("cannot inspect exec {exec_id}: {e}"))?;
        if let (false, Some(code)) = (info.running == Some(true), info.exit_code) {
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the engine reported no exit code for exec {exec_id}")
}

/// Runs a command with bottle's stdin, stdout and stderr attached (a TTY when stdin is one);
/// returns its exit code.
pub async fn exec_attached(docker: &Docker, spec: &ExecSpec<'_>) -> Result<i64> {
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut options = exec_options(spec, true);
    options.tty = Some(tty);
    let created = docker
        .create_exec(spec.container, options)
        .await
        .map_err(|e| anyhow!("cannot exec in {}: {e}", spec.container))?;
    let started = docker
        .start_exec(
            &created.id,
            Some(StartExecOptions {
                detach: false,
                tty,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| anyhow!("cannot exec in {}: {e}", spec.container))?;
    let StartExecResults::Attached { mut output, input } = started else {
        bail!("the engine started the exec detached");
    };
    let _raw = if tty { RawMode::enter() } else { None };
    if tty {
        resize(docker, &created.id).await;
    }
    let pump = tokio::spawn(pump_stdin(input));
    let winch = tty.then(|| {
        let docker = docker.clone();
        let id = created.id.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut s) = signal(SignalKind::window_change()) else {
                return;
            };
            while s.recv().await.is_some() {
                resize(&docker, &id).await;
            }
        })
    });
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    while let Some(item) = output.next().await {
        match item {
            Ok(LogOutput::StdErr { message }) => {
                let _ = stderr.write_all(&message);
                let _ = stderr.flush();
            }
            Ok(other) => {
                let _ = stdout.write_all(&other.into_bytes());
                let _ = stdout.flush();
            }
            Err(e) => bail!("lost the command's output: {e}"),
        }
    }
    pump.abort();
    if let Some(w) = winch {
        w.abort();
    }
    exit_code(docker, &created.id).await
}

/// Copies bottle's stdin into the exec; closes the exec's stdin at EOF. Reads on a plain
/// thread (a blocked read must never hold up the process's exit).
async fn pump_stdin(mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some(chunk) = rx.recv().await {
        if input.write_all(&chunk).await.is_err() || input.flush().await.is_err() {
            return;
        }
    }
    let _ = input.shutdown().await;
}

async fn resize(docker: &Docker, exec_id: &str) {
    if let Some((w, h)) = terminal_size() {
        let _ = docker
            .resize_exec(
                exec_id,
                bollard::query_parameters::ResizeExecOptionsBuilder::new()
                    .w(w as i32)
                    .h(h as i32)
                    .build(),
            )
            .await;
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let ws = rustix::termios::tcgetwinsize(std::io::stdout()).ok()?;
    (ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

/// The terminal in raw mode while the guest owns it; restored on drop.
struct RawMode {
    saved: rustix::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        use rustix::termios::{OptionalActions, tcgetattr, tcsetattr};
        let saved = tcgetattr(std::io::stdin()).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(std::io::stdin(), OptionalActions::Now, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}
