//! nginx on a loopback port serving a folder over HTTP (or HTTPS behind a CA made here),
//! with WebDAV's PUT and DELETE and a JSON autoindex: the HTTP cache of the share tests.
//! Stopped, and its folder removed, when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{stderr, stop};

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
        stop(&mut self.child, libc::SIGQUIT, Duration::from_secs(10));
    }
}
