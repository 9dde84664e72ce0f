//! The audit log: one JSON line per request the guest makes through pipelock, per ref update
//! it pushes through git-gate and per grant a person made for the run through supervise,
//! appended to a file of the run's folder
//! (`runs/RUNID/audit/audit.jsonl` on the host, kept after teardown until `bottle gc`;
//! `bottle logs RUN` prints it), and a short line on stderr.
//!
//! A line holds the time, the run, the method, host and port, the path with query *values*
//! dropped (names kept), the decision and the rule behind it, the status, the bytes each way
//! and the duration; a git-gate line also the ref update ([`GitUpdate`](crate::daemons::audit::GitUpdate)). Never a header value,
//! a query value, a matched secret or a key: those are where credentials live. pipelock masks
//! whatever a DLP rule matches in the host or path it logs — a path segment, a bare query, a
//! parameter's name — whether or not the request was refused (`/p/ghp_…[redacted]`; see
//! `dlp::Redactor`).
//!
//! This module owns the writer; the line's format is [`crate::daemons::audit`].

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::daemons::audit::{Event, short};

/// Where audit lines go.
#[derive(Debug)]
pub struct AuditLog {
    run: String,
    /// The daemon whose stderr lines these are.
    who: &'static str,
    file: Option<Mutex<std::fs::File>>,
}

impl AuditLog {
    /// Appends to `path` (created if missing) and to stderr; `run` names the run in each line
    /// (the bundle's `BOTTLE_RUN`).
    pub fn open(path: Option<&Path>, run: &str) -> Result<AuditLog> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open the audit log {}", p.display()))?,
            )),
            None => None,
        };
        Ok(AuditLog {
            run: run.to_string(),
            who: "pipelock",
            file,
        })
    }

    /// The same log, its stderr lines prefixed with `who` (pipelock's unless said).
    pub fn for_daemon(mut self, who: &'static str) -> AuditLog {
        self.who = who;
        self
    }

    pub fn run(&self) -> &str {
        &self.run
    }

    /// Writes one event (best effort: a full disk must not stop the proxy).
    pub fn record(&self, event: &Event) {
        let rule = event
            .rule
            .as_deref()
            .map(|r| format!(" rule={r}"))
            .unwrap_or_default();
        let git = event
            .git
            .as_ref()
            .map(|g| format!(" {} {}..{}", g.ref_name, short(&g.old), short(&g.new)))
            .unwrap_or_default();
        crate::bundle::log::log(
            self.who,
            format!(
                "audit {} {}:{}{}{git} {}{rule} status={}",
                event.method,
                event.host,
                event.port,
                event.path,
                event.decision.name(),
                event.status
            ),
        );
        if let Some(file) = &self.file {
            let mut line = serde_json::to_vec(event).expect("events serialize");
            line.push(b'\n');
            if let Ok(mut f) = file.lock() {
                let _ = f.write_all(&line);
            }
        }
    }
}

/// A path with query values dropped: `/a?x=1&y` → `/a?x=&y`.
pub fn redact_query(path_and_query: &str) -> String {
    match path_and_query.split_once('?') {
        None => path_and_query.to_string(),
        Some((path, query)) => {
            let names: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) => format!("{k}="),
                    None => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", names.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemons::audit::{Decision, GitUpdate};

    #[test]
    fn query_values_go_names_stay() {
        assert_eq!(redact_query("/a"), "/a");
        assert_eq!(
            redact_query("/v1/x?key=sk-ant-123&mode&b=2"),
            "/v1/x?key=&mode&b="
        );
    }

    #[test]
    fn lines_are_json_with_no_value_beyond_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "run1").unwrap();
        let e = Event {
            time_ms: 1,
            run: log.run().to_string(),
            method: "GET".into(),
            host: "a.test".into(),
            port: 443,
            path: "/x?token=".into(),
            decision: Decision::Refused,
            rule: Some("allowlist".into()),
            status: 403,
            bytes_in: 0,
            bytes_out: 10,
            duration_ms: 2,
            git: None,
        };
        log.record(&e);
        log.record(&e);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let back: Event = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(back, e);
        assert!(
            !text.contains("\"git\""),
            "pipelock's lines have no git field: {text}"
        );
    }

    /// The redaction where it happens: the real pipelock, on loopback, writing its audit log,
    /// gets a request whose query holds a value; the line it writes keeps the names only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelock_writes_a_requests_path_without_its_query_values() {
        use crate::bundle::pipelock::proxy::Proxy;
        use crate::bundle::serve::Context;
        use crate::daemons::pipelock::{Config, Dlp};
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "audit test CA");
        let cert = params.self_signed(&key).unwrap();
        let (ca_cert, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        std::fs::write(&ca_cert, cert.pem()).unwrap();
        std::fs::write(&ca_key, key.serialize_pem()).unwrap();
        let path = dir.path().join("audit.jsonl");
        let config = Config {
            listen_port: 0,
            listen_host: std::net::Ipv4Addr::LOCALHOST.into(),
            allow: Vec::new(),
            dlp: Dlp {
                enabled: false,
                rules: Vec::new(),
                allow: Vec::new(),
            },
            ca_cert: ca_cert.display().to_string(),
            ca_key: ca_key.display().to_string(),
            egress: crate::daemons::egress::Config {
                routes: Vec::new(),
                upstream_proxy: None,
            },
            audit_log: Some(path.display().to_string()),
            supervise: false,
            allow_private: Vec::new(),
            mapped_hosts: Vec::new(),
        };
        let ctx = Context {
            run_id: "-".into(),
            ..Context::default()
        };
        let proxy = Proxy::bind(config, ctx).await.unwrap();
        let port = proxy.local_addr().unwrap().port();
        let served = tokio::spawn(proxy.serve());
        // The value is made at run time, so this file does not hold it.
        let value = format!("qv{}", std::process::id() * 7 + 13);
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(
            format!(
                "GET http://denied.test/x?token={value}&mode&b={value} HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
        // The line is written when the answer's body is done: wait for it (the file's bytes
        // are an event, not a timer).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.ends_with('\n') {
                break text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no audit line: {text:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        served.abort();
        assert_eq!(text.lines().count(), 1, "{text}");
        let e: Event = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(e.path, "/x?token=&mode&b=", "{text}");
        assert_eq!((e.host.as_str(), e.port), ("denied.test", 80));
        assert_eq!(e.decision, Decision::Refused);
        assert_eq!(e.rule.as_deref(), Some("allowlist"));
        assert!(
            !text.contains(&value),
            "a query value is in the log: {text}"
        );
    }

    #[test]
    fn git_lines_carry_the_ref_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(Some(&path), "run1")
            .unwrap()
            .for_daemon("git-gate");
        let e = Event {
            time_ms: 1,
            run: "run1".into(),
            method: "git-receive-pack".into(),
            host: "up.test".into(),
            port: 22,
            path: "/srv/r.git".into(),
            decision: Decision::Refused,
            rule: Some("branches".into()),
            status: 200,
            bytes_in: 10,
            bytes_out: 0,
            duration_ms: 1,
            git: Some(GitUpdate {
                upstream: "origin".into(),
                ref_name: "refs/heads/main".into(),
                old: "0".repeat(40),
                new: "1".repeat(40),
            }),
        };
        log.record(&e);
        let text = std::fs::read_to_string(&path).unwrap();
        let back: Event = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(back, e);
        assert!(text.contains("\"ref_name\":\"refs/heads/main\""), "{text}");
    }
}
