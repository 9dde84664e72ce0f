//! The bundle image as a build artifact: `bottle build` makes a `FROM scratch` image holding
//! the very `bottle` binary, saves it into the entry, and that image runs `bottle sidecar`.
//!
//! Real Docker Engine; the docker CLI is used by the test only, to run and inspect the image.
//! Every container and image the test makes is removed by a guard, also when it fails.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bottle");

/// Removes the test's containers, then every image labelled with its build hash.
struct Cleanup {
    containers: Vec<String>,
    hash: Option<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        if let Some(hash) = &self.hash {
            // No asserting here: a panic while a failed test unwinds would abort.
            let ids = Command::new("docker")
                .args(["image", "ls", "-q", "--filter"])
                .arg(format!("label=bottle.hash={hash}"))
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rmi", "-f", "--no-prune"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the command runs")
}

/// A docker CLI command that must succeed; returns its stdout, trimmed.
fn docker(args: &[&str]) -> String {
    let out = run(Command::new("docker").args(args));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn bottle(store: &Path, args: &[&str]) -> String {
    let out = run(Command::new(BIN)
        .env("BOTTLE_STORE", store)
        .env_remove("BOTTLE_LOG")
        .arg("--no-progress")
        .args(args));
    assert!(
        out.status.success(),
        "bottle {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A recipe folder with a FROM-scratch busybox guest; the name is unique to this test run so
/// its hash (and so its image tags) is shared with no other test.
fn write_recipe(dir: &Path, name: &str) -> std::path::PathBuf {
    let guest = dir.join("guest");
    std::fs::create_dir_all(&guest).unwrap();
    std::fs::copy("/bin/busybox", guest.join("busybox"))
        .expect("/bin/busybox (Debian's busybox-static; run scripts/setup)");
    std::fs::write(
        guest.join("passwd"),
        "root:x:0:0::/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        guest.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY passwd /etc/passwd\nRUN mkdir -p /home/node && chown 1000:1000 /home/node\nUSER node\n",
    )
    .unwrap();
    let recipe = dir.join("bundle.toml");
    std::fs::write(
        &recipe,
        format!(
            "name = \"{name}\"\n\n[guest]\nbackend = \"docker\"\nimage = {{ dockerfile = \"guest/Dockerfile\" }}\nuser = \"node\"\ncommand = [\"sh\", \"-c\", \"id -un\"]\n\n[pipelock]\nallow = [\"allowed.test\", \"*.allowed.test\"]\n"
        ),
    )
    .unwrap();
    recipe
}

/// Sends one absolute-form GET through the proxy at `addr`; returns the status code.
fn proxy_get(addr: &str, url: &str) -> u16 {
    let mut s = TcpStream::connect(addr).expect("the bundle's pipelock accepts connections");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {out:?}"))
}

#[test]
fn bottle_build_makes_a_bundle_image_that_runs_the_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("bundle-test-{}-{nanos}", std::process::id());
    let recipe = write_recipe(&dir.path().join("recipe"), &name);
    let recipe = recipe.to_str().unwrap();
    let container = format!("{name}-sidecar");
    let mut cleanup = Cleanup {
        containers: vec![container.clone()],
        hash: None,
    };
    // Known before the build, so the guard removes the images even if the build fails midway.
    let hash = bottle(&store, &["hash", recipe]);
    cleanup.hash = Some(hash.clone());
    let built = bottle(&store, &["build", recipe]);
    assert_eq!(built.lines().last(), Some(hash.as_str()));

    // The manifest names the archive, which is a listed artifact, and the image's id.
    let entry = store.join("v1/builds").join(&hash);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("manifest.json")).unwrap()).unwrap();
    let archive = manifest["bundle"]["image_archive"].as_str().unwrap();
    assert_eq!(archive, "bundle/image.tar");
    let listed = manifest["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == archive)
        .unwrap_or_else(|| panic!("{archive} is not a listed artifact: {manifest:#}"));
    assert_eq!(listed["mode"], 0o644);
    assert!(listed["size"].as_u64().unwrap() > 1_000_000, "{listed}");
    let image_id = manifest["bundle"]["image_id"].as_str().unwrap();
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    assert_eq!(
        bottle(&store, &["verify", &hash]),
        format!("ok       {hash}")
    );

    // The engine holds it under the bundle tag, labelled with the hash, entry point sidecar.
    let tag = format!("bottle-bundle:{}", &hash[..12]);
    let inspect = |fmt: &str| docker(&["image", "inspect", &tag, "--format", fmt]);
    assert_eq!(inspect("{{.Id}}"), image_id);
    assert_eq!(inspect("{{index .Config.Labels \"bottle.hash\"}}"), hash);
    assert_eq!(
        inspect("{{json .Config.Entrypoint}}"),
        r#"["/bottle","sidecar"]"#
    );

    // Run it as `bottle run` will: daemons as the command, the entry's config mounted.
    let config = entry.join("config/pipelock.json");
    docker(&[
        "run",
        "-d",
        "--name",
        &container,
        "--label",
        &format!("bottle.hash={hash}"),
        "-v",
        &format!("{}:/etc/bottle/pipelock.json:ro", config.display()),
        &tag,
        "--daemons",
        "pipelock",
    ]);
    let logs = || {
        let out = run(Command::new("docker").args(["logs", &container]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !logs().contains("pipelock: listening on 0.0.0.0:8888") {
        assert!(
            Instant::now() < deadline,
            "the bundle logged no start line in 30 s:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(logs().contains("sidecar: starting pipelock (config folder /etc/bottle)"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &container]),
        "true",
        "the bundle stays up:\n{}",
        logs()
    );

    // Its pipelock answers on the container's address: a host off the allowlist gets 403.
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &container,
    ]);
    assert_eq!(
        proxy_get(&format!("{ip}:8888"), "http://refused.test/"),
        403
    );
    assert!(
        logs().contains("GET refused.test:80 refused status=403"),
        "{}",
        logs()
    );

    // `docker stop` (SIGTERM) ends it with 0.
    docker(&["stop", "-t", "10", &container]);
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.ExitCode}}", &container]),
        "0"
    );
    assert!(
        logs().contains("sidecar: stopping on SIGTERM"),
        "{}",
        logs()
    );
}
