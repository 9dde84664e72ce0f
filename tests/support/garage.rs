//! Garage S3 servers on loopback ports (the `garage` binary on PATH, or the one
//! `scripts/setup` installs): one node or a cluster, with one bucket and one key allowed on
//! it. Each server is stopped, and its folder removed, when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;
use super::{TestContext, stderr, stop};

/// The cluster's RPC secret (32 bytes in hex, as garage wants it), new for each test process.
fn rpc_secret() -> String {
    let seed = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    blake3::hash(seed.as_bytes()).to_hex().to_string()
}
pub const BUCKET: &str = "bottle-cache";

fn garage_bin() -> PathBuf {
    if let Ok(p) = which("garage") {
        return p;
    }
    let cache = std::env::var_os("BOTTLE_SETUP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/bottle-setup")
        });
    let p = cache.join("garage/bin/garage");
    assert!(
        p.is_file(),
        "no garage binary on PATH or at {}: run scripts/setup",
        p.display()
    );
    p
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

/// One Garage node: its folder, config, ports and process.
pub struct Node {
    dir: PathBuf,
    config: PathBuf,
    rpc: u16,
    pub s3: u16,
    child: Option<Child>,
}

impl Node {
    fn new(root: &Path, i: usize, replication: usize, rpc_secret: &str) -> Node {
        let dir = root.join(format!("node{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let config = dir.join("garage.toml");
        let text = format!(
            r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = {replication}
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
            d = dir.display()
        );
        std::fs::write(&config, text).unwrap();
        let mut node = Node {
            dir,
            config,
            rpc,
            s3,
            child: None,
        };
        node.start();
        node
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start garage");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.rpc)).is_err() {
            assert!(
                Instant::now() < deadline,
                "garage did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// `garage -c CONFIG ARGS`, which must succeed (retried while the cluster settles).
    fn cli(&self, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new(garage_bin())
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "garage {args:?}: {}{}",
                stderr(&out),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn id(&self) -> String {
        self.cli(&["node", "id", "-q"]).trim().to_string()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c, libc::SIGTERM, Duration::from_secs(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Garage cluster on loopback with one bucket and one key allowed on it.
pub struct Garage {
    pub nodes: Vec<Node>,
    pub key_id: String,
    pub secret: String,
    _dir: tempfile::TempDir,
}

impl Garage {
    pub fn start(n: usize) -> Garage {
        let dir = tempfile::tempdir().unwrap();
        let secret = rpc_secret();
        let nodes: Vec<Node> = (0..n)
            .map(|i| Node::new(dir.path(), i, n, &secret))
            .collect();
        let ids: Vec<String> = nodes.iter().map(|n| n.id()).collect();
        for id in &ids[1..] {
            nodes[0].cli(&["node", "connect", id]);
        }
        for id in &ids {
            let short = id.split('@').next().unwrap();
            nodes[0].cli(&["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        }
        nodes[0].cli(&["layout", "apply", "--version", "1"]);
        nodes[0].cli(&["bucket", "create", BUCKET]);
        let key = nodes[0].cli(&["key", "create", "bottle-test"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("no {name} in {key}"))
        };
        let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
        nodes[0].cli(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            "bottle-test",
        ]);
        Garage {
            nodes,
            key_id,
            secret,
            _dir: dir,
        }
    }

    /// `bottle` with the S3 environment of node `i`'s API.
    pub fn cmd(&self, ctx: &TestContext, i: usize) -> Command {
        let mut c = ctx.cmd();
        c.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "garage")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.nodes[i].s3),
            )
            .env("AWS_ALLOW_HTTP", "true");
        c
    }
}

impl Garage {
    /// `bottle` with only the credentials in the environment, the endpoint and region in a
    /// config file (`s3-endpoint`, `s3-region`).
    pub fn cmd_configured(&self, ctx: &TestContext, i: usize) -> Command {
        let config = ctx.dir.path().join("s3-config.toml");
        std::fs::write(
            &config,
            format!(
                "s3-endpoint = \"http://127.0.0.1:{}\"\ns3-region = \"garage\"\n",
                self.nodes[i].s3
            ),
        )
        .unwrap();
        let mut c = ctx.cmd();
        c.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("BOTTLE_CONFIG", &config);
        for v in [
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ENDPOINT",
            "AWS_ENDPOINT_URL",
            "AWS_ALLOW_HTTP",
        ] {
            c.env_remove(v);
        }
        c
    }
}

/// The bucket's objects through node 0's S3 API by raw key, bypassing bottle: what the share
/// tests plant, damage and compare. Requests are curl's, signed with SigV4 and sent with the
/// path as is, so a key is exactly as spelled: a `%` stays a `%`, and a `..` or empty part
/// (which object_store neither sends nor lists) is a part of the key, as S3 allows.
impl Garage {
    /// One request on `key` (`""`: the bucket) with `query`: the answer's body, or the
    /// HTTP status it failed with.
    fn s3(&self, method: &str, key: &str, query: &str, body: &[u8]) -> Result<Vec<u8>, u16> {
        use std::io::Write;
        let mut path = String::new();
        for b in key.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
                path.push(b as char);
            } else {
                path.push_str(&format!("%{b:02X}"));
            }
        }
        let mut child = Command::new("curl")
            .args(["-sS", "--path-as-is", "-X", method])
            .args(["-w", "\n%{http_code}"])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD"])
            .args(["--aws-sigv4", "aws:amz:garage:s3"])
            .arg("--user")
            .arg(format!("{}:{}", self.key_id, self.secret))
            .args(if method == "PUT" {
                &["--data-binary", "@-"][..]
            } else {
                &[][..]
            })
            .arg(format!(
                "http://127.0.0.1:{}/{BUCKET}/{path}{query}",
                self.nodes[0].s3
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl (run scripts/setup)");
        child.stdin.take().unwrap().write_all(body).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "curl {method} {key}: {}",
            stderr(&out)
        );
        let mut body = out.stdout;
        let at = body.iter().rposition(|b| *b == b'\n').unwrap();
        let code: u16 = String::from_utf8_lossy(&body[at + 1..]).parse().unwrap();
        body.truncate(at);
        if (200..300).contains(&code) {
            Ok(body)
        } else {
            Err(code)
        }
    }

    /// Writes `bytes` at `key`.
    pub fn put(&self, key: &str, bytes: &[u8]) {
        self.s3("PUT", key, "", bytes)
            .unwrap_or_else(|code| panic!("PUT {key}: {code}"));
    }

    /// The object at `key`, if any.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        match self.s3("GET", key, "", b"") {
            Ok(b) => Some(b),
            Err(404) => None,
            Err(code) => panic!("GET {key}: {code}"),
        }
    }

    /// Every object of the bucket, by key, with its bytes.
    pub fn objects(&self) -> Vec<(String, Vec<u8>)> {
        let xml = self
            .s3("GET", "", "?list-type=2", b"")
            .unwrap_or_else(|code| panic!("list the bucket: {code}"));
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.contains("<IsTruncated>false</IsTruncated>"), "{xml}");
        let mut out: Vec<_> = xml
            .split("<Key>")
            .skip(1)
            .map(|s| {
                let k = s.split("</Key>").next().unwrap();
                let k = k
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&apos;", "'")
                    .replace("&amp;", "&");
                let b = self
                    .get(&k)
                    .unwrap_or_else(|| panic!("{k} listed, then gone"));
                (k, b)
            })
            .collect();
        out.sort();
        out
    }
}
