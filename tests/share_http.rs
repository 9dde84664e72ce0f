//! Sharing entries through a real HTTP server: Debian's nginx with WebDAV's PUT and DELETE
//! and a JSON autoindex, started by the test on a loopback port with its own prefix, and
//! stopped (and its folder removed) when the test ends, also on failure.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::share::keygen;
use support::*;

/// A running nginx serving a folder over HTTP on 127.0.0.1.
pub struct Nginx {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    scheme: &'static str,
}

impl Nginx {
    pub fn start() -> Nginx {
        Nginx::start_with(None)
    }

    /// nginx serving HTTPS with a certificate for 127.0.0.1 from a CA made here with openssl;
    /// returns the CA's PEM file too.
    pub fn start_tls() -> (Nginx, PathBuf) {
        let certs = tempfile::tempdir().unwrap();
        let d = certs.path();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509"],
            &ec[..],
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "1",
                "-subj",
                "/CN=bottle test cache CA",
            ],
        ]
        .concat());
        run(&[
            &["req"],
            &ec[..],
            &[
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat());
        std::fs::write(
            d.join("ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "1",
            "-extfile",
            "ext",
        ]);
        let nginx = Nginx::start_with(Some((d.join("srv.pem"), d.join("srv.key"))));
        let ca = nginx.dir.path().join("ca.pem");
        std::fs::copy(d.join("ca.pem"), &ca).unwrap();
        (nginx, ca)
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path();
        std::fs::create_dir_all(d.join("www")).unwrap();
        let conf = format!(
            r#"daemon off;
user root;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port}{ssl};
    root {d}/www;
    location / {{
      dav_methods PUT DELETE;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      autoindex on;
      autoindex_format json;
    }}
  }}
}}
"#,
            d = d.display(),
            ssl = match &tls {
                Some((cert, key)) => format!(
                    " ssl;\n    ssl_certificate {};\n    ssl_certificate_key {}",
                    cert.display(),
                    key.display()
                ),
                None => String::new(),
            }
        );
        std::fs::write(d.join("nginx.conf"), conf).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-e")
            .arg(d.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian's nginx-light; run scripts/setup)");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let nginx = Nginx {
            child,
            dir,
            port,
            scheme,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx did not listen: {}",
                std::fs::read_to_string(nginx.dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("{}://127.0.0.1:{}/{prefix}", self.scheme, self.port)
    }

    /// The folder nginx serves.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("www")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: nginx's graceful stop; its workers go with the master.
        signal_pid(self.child.id(), libc::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap()
}

#[test]
fn an_entry_pushed_to_nginx_is_pulled_into_an_empty_store_and_runs() {
    let nginx = Nginx::start();
    let src = TestContext::new("share-http-src");
    let dst = TestContext::new("share-http-dst");
    let hash = src.build(&src.recipe());
    let (key, public) = keygen(&src, "ci-1");
    let url = nginx.url("team/cache");
    let push = |ctx: &TestContext| {
        json(&ctx.ok(&[
            "push",
            &hash,
            "--json",
            "--to",
            &url,
            "--sign-key",
            key.to_str().unwrap(),
        ]))
    };
    let first = push(&src);
    assert_eq!(first["components"].as_array().unwrap().len(), 3, "{first}");
    let uploaded = first["bytes_uploaded"].as_u64().unwrap();
    assert!(uploaded > 0);
    // The objects are on nginx's disk, under the URL's prefix.
    let on_disk = bytes_under(&nginx.root().join("team/cache"));
    assert_eq!(
        on_disk,
        uploaded + bytes_under(&nginx.root().join("team/cache/v1/entries"))
    );
    assert_eq!(
        push(&src)["chunks_uploaded"],
        0,
        "a second push uploads nothing"
    );

    let out = dst.ok(&["pull", &hash, "--json", "--from", &url, "--trust", &public]);
    let r = json(&out);
    assert_eq!(r["components"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["signed_by"], "ci-1");
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    let out = dst.output(&["run", &hash, "--", "sh", "-c", "echo ran as $(id -un)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ran as node");

    // gc over HTTP: lists through nginx's JSON autoindex, removes with DELETE.
    let orphan = nginx
        .root()
        .join("team/cache/v1/chunks/00")
        .join("0".repeat(64));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    let r = json(&src.ok(&["gc", "--json", "--remote", &url]));
    assert_eq!(r["kept"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["removed_chunks"], 1, "{r}");
    assert!(!orphan.exists());
    assert_eq!(
        push(&src)["chunks_uploaded"],
        0,
        "gc kept every chunk the entry needs"
    );

    // A chunk flipped on the server's disk: refused, naming the file and the chunk; the
    // store it was pulled into is unchanged.
    let m = src.manifest(&hash);
    let guest = m.components.get(bottle::hash::ComponentKind::Guest);
    let list: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            nginx
                .root()
                .join("team/cache")
                .join(bottle::share::chunk_list_key(&guest)),
        )
        .unwrap(),
    )
    .unwrap();
    let first = list["files"][0]["chunks"][0]["blake3"].as_str().unwrap();
    let chunk = nginx
        .root()
        .join("team/cache")
        .join(bottle::share::chunk_key(
            &bottle::digest::Digest::parse(first).unwrap(),
        ));
    let mut b = std::fs::read(&chunk).unwrap();
    b[0] ^= 1;
    std::fs::write(&chunk, b).unwrap();
    let fourth = TestContext::new("share-http-flipped");
    fourth.build(&fourth.recipe());
    let before = fourth.snapshot();
    let out = fourth.output(&["pull", &hash, "--from", &url, "--trust", &public]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("refused entry {hash} from {url}")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "guest/{}: chunk {}",
            list["files"][0]["path"].as_str().unwrap(),
            &first[..12]
        )),
        "{err}"
    );
    assert_eq!(fourth.snapshot(), before, "the store changed");
    fourth.assert_nothing_left();

    // A server that is gone: a clear error naming the URL, after retries, the store unchanged.
    let gone = format!("http://127.0.0.1:{}/x", free_port());
    let third = TestContext::new("share-http-gone");
    let out = third.output(&["pull", &hash, "--from", &gone, "--trust", &public]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&gone), "{}", stderr(&out));
    assert!(!third.store.exists());
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_https_cache_behind_a_private_ca_serves_a_pull_once_its_ca_is_named() {
    let (nginx, ca) = Nginx::start_tls();
    let src = TestContext::new("share-https-src");
    let dst = TestContext::new("share-https-dst");
    let hash = src.build(&src.recipe());
    let (key, public) = keygen(&src, "ci-1");
    let url = nginx.url("cache");
    assert!(url.starts_with("https://"), "{url}");
    let mut c = src.cmd();
    c.env(bottle::share::tls::CA_ENV, &ca);
    let out = src.output_of(
        c,
        &[
            "push",
            &hash,
            "--to",
            &url,
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Without the CA: the certificate is refused, naming the cache; nothing is pulled.
    let out = dst.output(&["pull", &hash, "--from", &url, "--trust", &public]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&url), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    assert!(!dst.store.exists());
    let mut c = dst.cmd();
    c.env(bottle::share::tls::CA_ENV, &ca);
    let out = dst.output_of(c, &["pull", &hash, "--from", &url, "--trust", &public]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    dst.assert_nothing_left();
    src.assert_nothing_left();
}
