//! A real SSH upstream for git-gate's tests: Debian's OpenSSH server (`scripts/setup` installs
//! `openssh-server`) started on the host as `/usr/sbin/sshd -D -f CONFIG` on 0.0.0.0 and a
//! free high port, with a host key and an authorized client key (ed25519, made by
//! `ssh-keygen` in the test's folder), `StrictModes no`, `UsePAM no`, logging to a file, and
//! a real bare repository to push to. Killed on drop, also when the test fails.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;

pub struct Sshd {
    pub port: u16,
    child: Child,
    pub dir: PathBuf,
    /// The private key the upstream accepts (git-gate's identity).
    pub client_key: PathBuf,
    /// The server's public host key line (`ssh-ed25519 AAAA…`).
    pub host_key: String,
    /// The bare repository served.
    pub bare: PathBuf,
    pub log: PathBuf,
}

/// Runs Debian's git with no system or user config; returns stdout, panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("/usr/bin/git")
        .args(["-c", "user.name=T", "-c", "user.email=t@t.invalid"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("/usr/bin/git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes an ed25519 key pair at `path` (and `path.pub`); returns the public line's first two
/// words (`ssh-ed25519 AAAA…`).
pub fn keygen(path: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen (Debian's openssh-client)");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sshd {
    /// Starts sshd serving `DIR/upstream.git` (a bare repository whose `main` holds one commit),
    /// with its files in `dir/sshd/`.
    pub fn start(dir: &Path) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: run scripts/setup (it installs openssh-server)"
        );
        let home = dir.join("sshd");
        std::fs::create_dir_all(&home).unwrap();
        let host_key = keygen(&home.join("host_ed25519"));
        let client_key = home.join("client_ed25519");
        let client_pub = keygen(&client_key);
        std::fs::write(home.join("authorized_keys"), format!("{client_pub}\n")).unwrap();
        // Privilege separation needs its folder (Debian makes it at boot).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let bare = dir.join("upstream.git");
        let seed = dir.join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        git(&seed, &["init", "-q", "-b", "main"]);
        std::fs::write(seed.join("README"), "upstream\n").unwrap();
        git(&seed, &["add", "README"]);
        git(&seed, &["commit", "-qm", "upstream's first commit"]);
        git(
            dir,
            &[
                "clone",
                "-q",
                "--bare",
                seed.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        let port = free_port();
        let log = home.join("sshd.log");
        let config = home.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 0.0.0.0\nHostKey {}\nAuthorizedKeysFile {}\nPidFile none\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nLogLevel VERBOSE\nMaxStartups 100\n",
                home.join("host_ed25519").display(),
                home.join("authorized_keys").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/sbin/sshd");
        let mut sshd = Sshd {
            port,
            child,
            dir: home,
            client_key,
            host_key,
            bare,
            log,
        };
        sshd.wait_listening();
        sshd
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited ({status}):\n{}", self.log_text());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("sshd did not listen on {}:\n{}", self.port, self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many logins the server accepted (its log's `Accepted publickey` lines).
    #[allow(
        dead_code,
        reason = "the offline harness uses it, the engine harness not"
    )]
    pub fn logins(&self) -> usize {
        self.log_text().matches("Accepted publickey").count()
    }

    /// Kills the server's per-connection processes (its children): every client's session
    /// dies, the listener stays. Returns how many were killed.
    #[allow(
        dead_code,
        reason = "the offline harness uses it, the engine harness not"
    )]
    pub fn drop_connections(&self) -> usize {
        let master = self.child.id().to_string();
        let mut killed = 0;
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `PID (COMM) STATE PPID …`: the fields after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(1));
            if ppid == Some(master.as_str()) {
                let pid = entry.file_name().to_string_lossy().into_owned();
                let ok = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
                killed += usize::from(ok.success());
            }
        }
        killed
    }

    /// The known_hosts line for this server under `name`: `[name]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts_line(&self, name: &str) -> String {
        format!("[{name}]:{} {}\n", self.port, self.host_key)
    }

    /// `git --git-dir BARE ARGS`.
    pub fn git(&self, args: &[&str]) -> String {
        let mut all = vec!["--git-dir", self.bare.to_str().unwrap()];
        all.extend_from_slice(args);
        git(&self.dir, &all)
    }

    /// The upstream's refs, `ID REF` lines: for "unchanged" checks.
    pub fn refs(&self) -> String {
        self.git(&["for-each-ref", "--format=%(objectname) %(refname)"])
    }

    /// A ref's id in the upstream, if it exists.
    pub fn rev(&self, name: &str) -> Option<String> {
        let out = Command::new("/usr/bin/git")
            .args([
                "--git-dir",
                self.bare.to_str().unwrap(),
                "rev-parse",
                "--verify",
                "-q",
                name,
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The upstream's refs and its object count (loose and packed): a push that reached it,
    /// even one it did not apply, changes this.
    pub fn state(&self) -> String {
        let counts = self.git(&["count-objects", "-v"]);
        let objects: u64 = counts
            .lines()
            .filter_map(|l| {
                l.strip_prefix("count: ")
                    .or_else(|| l.strip_prefix("in-pack: "))
            })
            .map(|n| n.trim().parse::<u64>().unwrap())
            .sum();
        format!("{}objects: {objects}\n", self.refs() + "\n")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
