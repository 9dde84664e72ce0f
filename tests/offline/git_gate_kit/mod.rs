//! The kit of git-gate's daemon tests (`tests/offline/daemon_git_gate*.rs`): the real `bottle
//! sidecar --daemons git-gate` on 127.0.0.1 with a real OpenSSH server as its upstream
//! ([`crate::support::sshd`]), Debian's git and curl as its clients.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::support::ports::free_port;
use crate::support::sshd::Sshd;

/// A running `bottle sidecar --daemons git-gate`, killed when dropped.
pub struct Gate {
    pub child: Child,
    pub port: u16,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub audit: PathBuf,
}

impl Gate {
    /// git-gate for `sshd`'s repository as upstream `origin`: `branches = ["agent/*"]`, no
    /// tags, at most `max_push_bytes`; `known_hosts` is the file's text.
    pub fn start(dir: &Path, sshd: &Sshd, known_hosts: &str, max_push_bytes: u64) -> Gate {
        let port = free_port();
        let kh = dir.join("known_hosts");
        std::fs::write(&kh, known_hosts).unwrap();
        let audit = dir.join("audit.jsonl");
        let config = serde_json::json!({
            "port": port,
            "listen_host": "127.0.0.1",
            "upstreams": [{
                "name": "origin",
                "via": {"ssh": {
                    "url": format!("ssh://root@127.0.0.1:{}{}", sshd.port, sshd.bare.display()),
                    "identity": sshd.client_key,
                    "known_hosts": kh,
                }},
                "branches": ["agent/*"],
                "tags": false,
                "max_push_bytes": max_push_bytes,
            }],
            "audit_log": audit,
        });
        let conf_dir = dir.join("etc");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("git-gate.json"), config.to_string()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bottle"))
            .args(["sidecar", "--daemons", "git-gate", "--config-dir"])
            .arg(&conf_dir)
            .env("BOTTLE_RUN", "run-under-test")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bottle sidecar starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut text = String::new();
            let mut r = std::io::BufReader::new(stderr);
            while {
                text.clear();
                std::io::BufRead::read_line(&mut r, &mut text).unwrap_or(0) > 0
            } {
                eprint!("[sidecar] {text}");
                sink.lock().unwrap().push(text.trim_end().to_string());
            }
        });
        let mut gate = Gate {
            child,
            port,
            lines,
            audit,
        };
        gate.wait_for(&format!("listening on 127.0.0.1:{port}"));
        gate
    }

    pub fn log(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    pub fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the sidecar exited ({status}):\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "no {needle:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/origin", self.port)
    }

    /// The audit log's lines, as JSON.
    pub fn events(&self) -> Vec<serde_json::Value> {
        std::thread::sleep(Duration::from_millis(300));
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's git in `dir`, no proxy, no config but the test's identity; returns the output.
pub fn git_out(dir: &Path, args: &[&str]) -> Output {
    Command::new("/usr/bin/git")
        .args(["-c", "user.name=T", "-c", "user.email=t@t.invalid"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .output()
        .unwrap()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A push that must fail with `needle` in its output and leave the upstream as it was.
pub fn refused(work: &Path, sshd: &Sshd, args: &[&str], needle: &str) -> String {
    let before = sshd.state();
    let out = git_out(work, args);
    let t = text(&out);
    assert!(!out.status.success(), "git {args:?} succeeded:\n{t}");
    assert!(t.contains(needle), "git {args:?}: no {needle:?} in:\n{t}");
    assert_eq!(sshd.state(), before, "git {args:?} changed the upstream");
    t
}

pub fn clone(dir: &Path, gate: &Gate) -> PathBuf {
    let work = dir.join("work");
    let out = git_out(dir, &["clone", "-q", &gate.url(), work.to_str().unwrap()]);
    assert!(out.status.success(), "clone: {}", text(&out));
    work
}

/// A POST of `body` to git-gate's receive-pack with curl: (status, body).
pub fn post(gate: &Gate, dir: &Path, body: &[u8]) -> (String, String) {
    let file = dir.join("body.bin");
    std::fs::write(&file, body).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "30",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .args([
            "-H",
            "Content-Type: application/x-git-receive-pack-request",
            "--data-binary",
        ])
        .arg(format!("@{}", file.display()))
        .arg(format!("{}/git-receive-pack", gate.url()))
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = t.rsplit_once('\n').unwrap_or(("", &t));
    (status.to_string(), body.to_string())
}

pub fn pkt(line: &str) -> Vec<u8> {
    let mut v = format!("{:04x}", line.len() + 4).into_bytes();
    v.extend_from_slice(line.as_bytes());
    v
}
