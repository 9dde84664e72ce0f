//! A `bottle` process a test started ([`Spawned`]), its stdout and stderr read by threads:
//! started through the test's context (paused at a step, or not), waited on for a stderr line
//! or its end, signalled, and stopped when dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::TestContext;

impl TestContext {
    /// Starts `bottle ARGS` and waits for the line `bottle run: paused at step 'STEP'`.
    pub fn spawn_paused(&self, step: &str, args: &[&str], envs: &[(&str, &str)]) -> Spawned {
        let mut c = self.cmd();
        c.env("BOTTLE_PAUSE_AT", step);
        for (k, v) in envs {
            c.env(k, v);
        }
        let mut s = Spawned::start(c, args);
        let seen = s.wait_for_stderr("paused at step", Duration::from_secs(120));
        assert!(
            seen.contains(&format!("paused at step '{step}'")),
            "paused elsewhere: {seen}"
        );
        s
    }

    /// Starts `bottle ARGS` with stdin null, stdout and stderr read by threads.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        Spawned::start(self.cmd(), args)
    }
}

/// A `bottle` process the test started, its stdout and stderr read by threads. Dropped while
/// still running (a failing test), it is asked to stop (SIGTERM, so it tears down itself),
/// then killed.
pub struct Spawned {
    pub child: Child,
    stdout: Option<Receiver<String>>,
    lines: Receiver<String>,
    seen: String,
}

impl Spawned {
    pub fn start(mut cmd: Command, args: &[&str]) -> Spawned {
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn bottle");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut out = child.stdout.take().unwrap();
        let (tx, stdout) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Bytes, shown lossily: a guest's binary output must not empty the whole capture.
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            let _ = tx.send(String::from_utf8_lossy(&b).into_owned());
        });
        Spawned {
            child,
            stdout: Some(stdout),
            lines,
            seen: String::new(),
        }
    }

    /// Waits for a stderr line containing `needle`; returns stderr so far. Panics with what
    /// was printed if the process ends first.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(needle) {
                        return self.seen.clone();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    panic!(
                        "bottle ended ({status}) before printing {needle:?}:\nstdout: {}\nstderr: {}",
                        self.stdout
                            .take()
                            .and_then(|r| r.recv().ok())
                            .unwrap_or_default(),
                        self.seen
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {needle:?} on stderr within {timeout:?}:\n{}", self.seen)
                }
            }
        }
    }

    pub fn signal(&self, sig: i32) {
        signal_pid(self.child.id(), sig);
    }

    /// Waits for the process: (exit code, stdout, the whole stderr).
    pub fn finish(mut self, timeout: Duration) -> (Option<i32>, String, String) {
        let status = self.wait(timeout);
        let out = self
            .stdout
            .take()
            .and_then(|r| r.recv_timeout(Duration::from_secs(10)).ok())
            .unwrap_or_default();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        (status.code(), out, std::mem::take(&mut self.seen))
    }

    /// Waits for the process to end; kills it and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("bottle did not end within {timeout:?}:\n{}", self.seen);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        stop(&mut self.child, libc::SIGTERM, Duration::from_secs(30));
    }
}

/// Stops a child this test spawned, unless it has exited: `sig`, then up to `grace` for it
/// to exit, then SIGKILL; reaped either way.
pub fn stop(child: &mut std::process::Child, sig: i32, grace: Duration) {
    if !matches!(child.try_wait(), Ok(None)) {
        return;
    }
    signal_pid(child.id(), sig);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[allow(unsafe_code)] // kill(2)
fn signal_pid(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this test spawned.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "kill failed");
}
