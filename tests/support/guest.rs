//! The tests' guests and recipes: the busybox guest's Dockerfile, the run and build recipes,
//! the tools guest (Debian's curl and git with their libraries), and the sections of a guest
//! script's output.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{TestContext, stderr, stdout};

/// The guest's Dockerfile; `home`: whether the image has /home/node (owned by root, so the
/// run's chown matters). The test's `test-id` goes in first, at a path naming the test
/// (`test_id_path`): every layer of the build is then the test's own, and its guard removes
/// the whole chain without touching another test's build cache.
pub fn dockerfile(home: bool, test_id_path: &str) -> String {
    let mut s = format!(
        "FROM scratch\nCOPY test-id {test_id_path}\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY passwd group /etc/\nRUN mkdir -p /tmp && chmod 1777 /tmp\n",
    );
    if home {
        s.push_str("RUN mkdir -p /home/node\n");
    }
    s.push_str("USER node\n");
    s
}

/// A docker-guest recipe for runs, named `name`; `extra` is appended.
pub fn recipe(name: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
home = "/home/node"
command = ["sh", "-c", "echo hello from $(id -un)"]
env = {{ EDITOR = "vi", BOTTLE_TEST_MARK = "mark-{name}" }}

[pipelock]
allow = ["example.com"]
{extra}"#
    )
}

/// The build tests' recipe: every input kind (context, prompt, skills).
pub fn base_recipe(name: &str) -> String {
    format!(
        r#"name = "{name}"

[guest]
backend = "docker"
image = {{ dockerfile = "guest/Dockerfile" }}
user = "node"
command = ["sh", "-c", "id -un"]
env = {{ EDITOR = "vi", LANG = "C.UTF-8" }}

[pipelock]
allow = ["example.com", "api.example.org"]

[provision]
prompt = "prompt.md"
skills = "skills"
git_name = "Agent"
"#
    )
}

/// The programs of the tools guest ([`TestContext::use_tools_guest`]): Debian's curl, and git
/// with its HTTP transport (`git-remote-https` is a link to `git-remote-http`; the guest gets
/// both as real files).
pub const TOOLS: &[&str] = &[
    "/usr/bin/curl",
    "/usr/bin/git",
    "/usr/lib/git-core/git-remote-http",
    "/usr/lib/git-core/git-remote-https",
];

/// What Debian binaries need to run on an empty image: each of them and every file `ldd`
/// lists for them (shared libraries and the loader), by the path ldd names, sorted, each once.
pub fn with_libraries(binaries: &[&str]) -> Vec<PathBuf> {
    let mut files = BTreeSet::new();
    for bin in binaries {
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: run scripts/setup (it installs Debian's curl and git)"
        );
        files.insert(PathBuf::from(bin));
        let out = Command::new("ldd").arg(bin).output().expect("ldd");
        assert!(out.status.success(), "ldd {bin}: {}", stderr(&out));
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)";
        // linux-vdso has no file.
        for line in stdout(&out).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let path = match words.as_slice() {
                [_, "=>", p, ..] if p.starts_with('/') => p,
                [p, ..] if p.starts_with('/') => p,
                _ => continue,
            };
            files.insert(PathBuf::from(path));
        }
    }
    files.into_iter().collect()
}

impl TestContext {
    /// Makes this test's guest (`recipes/guest/`, its `test-id` step first as ever) a
    /// `FROM scratch` image with real network clients: Debian's curl, git and git-remote-http(s)
    /// ([`TOOLS`]) with the shared libraries and loader they link against (copied as real files
    /// to the paths `ldd` names), busybox, a `node` user owning `/home/node`, and an empty
    /// `/etc/ssl/certs/ca-certificates.crt`, which the run's provisioning fills with the run's
    /// CA: the guest trusts that CA only (curl also through `SSL_CERT_FILE`; git's libcurl
    /// reads only the bundle file).
    pub fn use_tools_guest(&self) {
        let guest = self.recipes.join("guest");
        let root = guest.join("root");
        for file in with_libraries(TOOLS) {
            let to = root.join(file.strip_prefix("/").unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            // fs::copy follows links: a real file, with the target's mode.
            std::fs::copy(&file, &to)
                .unwrap_or_else(|e| panic!("copy {} into the guest: {e}", file.display()));
        }
        std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
        std::fs::write(root.join("etc/ssl/certs/ca-certificates.crt"), "").unwrap();
        std::fs::write(
            guest.join("Dockerfile"),
            format!(
                "FROM scratch\nCOPY test-id {}\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY passwd group /etc/\nRUN mkdir -p /tmp /home/node && chmod 1777 /tmp && chown node:node /home/node\nCOPY root/ /\nENV PATH=/usr/local/bin:/usr/bin:/bin\nUSER node\nWORKDIR /home/node\n",
                self.test_id_path
            ),
        )
        .unwrap();
    }
}

/// A section of a guest script's output: the text after the line `== NAME` up to the next
/// `== ` line. Panics (showing the start of `out`) when there is none.
pub fn section<'a>(out: &'a str, name: &str) -> &'a str {
    try_section(out, name).unwrap_or_else(|| {
        let start: String = out.chars().take(4000).collect();
        panic!("no section {name} in:\n{start}")
    })
}

/// [`section`], or `None`.
pub fn try_section<'a>(out: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!("== {name}\n");
    let rest = &out[out.find(&marker)? + marker.len()..];
    let end = if rest.starts_with("== ") {
        0
    } else {
        rest.find("\n== ").map(|i| i + 1).unwrap_or(rest.len())
    };
    Some(&rest[..end])
}
