//! The kit of the daemons' tests (`tests/offline/daemon_*.rs`): the real `bottle sidecar` with
//! a config of the test's making, CAs made with rcgen (the bottle's, and the upstreams'),
//! upstream servers on 127.0.0.1 that record what they get as it arrives and can echo it back
//! in small chunks, and clients: curl through the proxy, and rustls by hand through a CONNECT.
//!
//! Names: `*.test` names reach the test's servers through pipelock's test-only resolution
//! override (`BOTTLE_PIPELOCK_TEST_RESOLVE`, loopback only); nothing is added to /etc/hosts.

mod reflect;
mod upstreams;

pub use upstreams::{Upstream, connect_proxy, read_head, upstream, upstream_on};

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::support::ports::free_port;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};

/// The real token of the test's route: the guest never holds it.
/// Words, not random characters: the repository's own files are DLP's ordinary corpus.
pub const TOKEN: &str = "tok-REAL-route-token-of-the-pipelock-tests";
/// What the guest holds instead.
pub const PLACEHOLDER: &str = "egress-placeholder";
pub const TOKEN_ENV: &str = "TEST_API_TOKEN";

/// A CA made with rcgen.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes `NAME.crt` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, self.pem()).unwrap();
        std::fs::write(&key, self.issuer.key().serialize_pem()).unwrap();
        (cert, key)
    }

    /// A server certificate for `names`.
    pub fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }
}

/// How a test's pipelock is set up.
#[derive(Default)]
pub struct Setup {
    pub allow: Vec<String>,
    /// `(host, upstream_ca PEM or none, token_env)`; header `Authorization`, scheme `Bearer`.
    pub routes: Vec<(String, Option<String>, String)>,
    pub dlp_rules: Vec<(String, String)>,
    pub secrets: Vec<(String, String)>,
    /// Names resolved to 127.0.0.1 and mapped as the recipe's `[network] hosts` would map them.
    pub names: Vec<String>,
    /// `(name, answers)`: names resolved by the test hook (`127.0.0.2|127.0.0.1`: one answer
    /// per lookup, the last repeated) but not mapped: plain DNS answers to pipelock.
    pub resolved: Vec<(String, String)>,
    /// `[pipelock] allow_private`.
    pub allow_private: Vec<String>,
    pub upstream_proxy: Option<String>,
    /// supervise's queue folder, when a test keeps it across sidecars (else one of its own).
    pub supervise_queue: Option<PathBuf>,
    /// git-gate's config, for a test that starts it with upstreams (else none, on a free port).
    pub git_gate: Option<bottle::daemons::git_gate::Config>,
}

/// A running `bottle sidecar --daemons pipelock`, killed when dropped.
pub struct Sidecar {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub port: u16,
    /// Held, never read: the sidecar's folder lives as long as it does.
    _dir: tempfile::TempDir,
    pub audit: PathBuf,
    /// The bottle CA's certificate (what the guest trusts).
    pub ca: Ca,
    pub ca_file: PathBuf,
    /// supervise's port (on 127.0.0.1) and queue folder, for a test that starts it.
    pub supervise_port: u16,
    pub queue: PathBuf,
}

impl Sidecar {
    pub async fn start(setup: Setup) -> Sidecar {
        Sidecar::start_daemons(setup, "pipelock").await
    }

    pub async fn start_daemons(setup: Setup, daemons: &str) -> Sidecar {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let ca = Ca::new("bottle test pipelock CA");
        let (ca_file, key_file) = ca.write(dir.path(), "pipelock");
        let audit = dir.path().join("audit.jsonl");
        let routes: Vec<_> = setup
            .routes
            .iter()
            .map(|(host, pem, env)| {
                let upstream_ca = pem.as_ref().map(|pem| {
                    let path = dir.path().join(format!("{host}.pem"));
                    std::fs::write(&path, pem).unwrap();
                    path
                });
                serde_json::json!({"host": host, "header": "Authorization", "scheme": "Bearer",
                    "token_env": env, "upstream_ca": upstream_ca})
            })
            .collect();
        let rules: Vec<_> = setup
            .dlp_rules
            .iter()
            .map(|(id, regex)| serde_json::json!({"id": id, "regex": regex}))
            .collect();
        let config = serde_json::json!({
            "listen_port": port,
            "listen_host": "127.0.0.1",
            "allow": setup.allow,
            "dlp": {"enabled": true, "rules": rules, "allow": []},
            "ca_cert": ca_file,
            "ca_key": key_file,
            "egress": {"routes": routes, "upstream_proxy": setup.upstream_proxy},
            "audit_log": audit,
            "supervise": daemons.contains("supervise"),
            "allow_private": setup.allow_private,
            "mapped_hosts": setup.names,
        });
        std::fs::write(dir.path().join("pipelock.json"), config.to_string()).unwrap();
        // The other daemons' configs, for a test that starts them too.
        // Written from the daemons' own typed configs, so a field change cannot drift here.
        let loopback: std::net::IpAddr = std::net::Ipv4Addr::LOCALHOST.into();
        let git_gate = setup
            .git_gate
            .clone()
            .unwrap_or(bottle::daemons::git_gate::Config {
                port: free_port(),
                listen_host: loopback,
                upstreams: Vec::new(),
                audit_log: None,
            });
        std::fs::write(
            dir.path().join("git-gate.json"),
            serde_json::to_string(&git_gate).unwrap(),
        )
        .unwrap();
        let supervise_port = free_port();
        let queue = setup
            .supervise_queue
            .clone()
            .unwrap_or_else(|| dir.path().join("queue"));
        std::fs::create_dir_all(&queue).unwrap();
        let supervise = bottle::daemons::supervise::Config {
            port: supervise_port,
            queue: queue.display().to_string(),
            listen_host: loopback,
            audit_log: Some(audit.display().to_string()),
        };
        std::fs::write(
            dir.path().join("supervise.json"),
            serde_json::to_string(&supervise).unwrap(),
        )
        .unwrap();
        let resolve: Vec<String> = setup
            .names
            .iter()
            .map(|n| format!("{n}=127.0.0.1"))
            .chain(setup.resolved.iter().map(|(n, a)| format!("{n}={a}")))
            .collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bottle"))
            .args([
                "sidecar",
                "--secrets-on-stdin",
                "--daemons",
                daemons,
                "--config-dir",
            ])
            .arg(dir.path())
            .env("BOTTLE_RUN", "run-under-test")
            .env("BOTTLE_PIPELOCK_TEST_RESOLVE", resolve.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bottle sidecar starts");
        let secrets: serde_json::Map<String, serde_json::Value> = setup
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::Value::Object(secrets).to_string().as_bytes())
            .unwrap();
        drop(stdin);
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[sidecar] {line}");
                sink.lock().unwrap().push(line);
            }
        });
        let mut sidecar = Sidecar {
            child,
            lines,
            port,
            _dir: dir,
            audit,
            ca,
            ca_file,
            supervise_port,
            queue,
        };
        sidecar
            .wait_for(&format!("pipelock: listening on 127.0.0.1:{port}"))
            .await;
        sidecar
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.log().iter().any(|l| l.contains(needle)) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "bottle sidecar exited ({status}) before logging {needle:?}:\n{}",
                    self.log().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?} in 20 s:\n{}",
                self.log().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The audit log's events so far (waits a moment for answers still being written).
    pub async fn events(&self) -> Vec<serde_json::Value> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
            .collect()
    }

    /// The raw audit log.
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }

    /// SIGTERM, then the exit status (within 10 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "bottle sidecar ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One event whose fields match every `(key, value)` given, or a panic showing them all.
pub fn find_event<'a>(
    events: &'a [serde_json::Value],
    want: &[(&str, serde_json::Value)],
) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| want.iter().all(|(k, v)| &e[*k] == v))
        .unwrap_or_else(|| panic!("no audit event with {want:?} in {events:#?}"))
}

/// What curl got.
#[derive(Debug)]
pub struct Curl {
    pub ok: bool,
    pub status: u16,
    pub headers: String,
    pub body: String,
    #[allow(dead_code, reason = "read through Debug, in failure messages")]
    pub stderr: String,
}

/// curl through the proxy, trusting the bottle CA; `args` end with the URL.
pub async fn curl(sidecar: &Sidecar, args: &[&str]) -> Curl {
    let out_dir = tempfile::tempdir().unwrap();
    let (head, body) = (out_dir.path().join("head"), out_dir.path().join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--proxy"])
        .arg(format!("http://127.0.0.1:{}", sidecar.port))
        .arg("--cacert")
        .arg(&sidecar.ca_file)
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .env_remove("no_proxy")
        .env_remove("NO_PROXY");
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("curl runs"))
        .await
        .unwrap();
    Curl {
        ok: out.status.success(),
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&head).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A rustls client through a CONNECT written by hand, trusting `roots` only.
pub async fn tls_through(
    proxy: u16,
    host: &str,
    port: u16,
    roots: &[CertificateDer<'static>],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
    s.write_all(
        format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "CONNECT answered {head:?}"
    );
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_string()).unwrap(), s)
        .await
        .expect("the TLS handshake with pipelock's leaf completes")
}

/// Sends `request` to the proxy, reads until it closes; returns (status, whole text).
pub async fn exchange(proxy: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", proxy)).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers within 30 s")
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}
