//! The bundle component as a build artifact: `bottle build` writes a `FROM scratch` image
//! archive holding the very `bottle` binary into the bundle component, the engine loads it,
//! and that image runs `bottle sidecar`.
//!
//! Real Docker Engine; the docker CLI is used by the test only, to run and inspect the image.
//! The container the test makes carries the store's label, so the context's guard removes it.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use bottle::builder::bundle::{IMAGE_ARCHIVE, bundle_tag};
use bottle::hash::ComponentKind;
use support::{LABEL_COMPONENT, TestContext, docker_ok, unique};

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
    let ctx = TestContext::new("bundle-image");
    let recipe = ctx.write_recipe(
        "bundle.toml",
        "name = \"bundle-image\"\n\n[guest]\nbackend = \"docker\"\nimage = { dockerfile = \"guest/Dockerfile\" }\nuser = \"node\"\ncommand = [\"sh\", \"-c\", \"id -un\"]\n\n[pipelock]\nallow = [\"allowed.test\", \"*.allowed.test\"]\n",
    );
    let hash = ctx.build(&recipe);
    let entry = ctx.entry(&hash);
    let bundle = &entry.bundle;
    assert_eq!(bundle.id.kind, ComponentKind::Bundle);
    // Its key is this build of bottle, nothing of the recipe.
    let bottle::hash::ComponentKey::Bundle(key) = &bundle.record.key else {
        panic!("{:?}", bundle.record.key)
    };
    assert_eq!(key.builder, bottle::hash::BUILDER);
    // The record names the archive, which is a listed file, and the image's id.
    let image = bundle.image();
    assert_eq!(image.archive, IMAGE_ARCHIVE);
    assert!(image.pack.is_none());
    let listed = bundle
        .record
        .files
        .iter()
        .find(|a| a.path == image.archive)
        .unwrap_or_else(|| {
            panic!(
                "{} is not a listed file: {:?}",
                image.archive, bundle.record
            )
        });
    assert_eq!(listed.mode, 0o644);
    assert!(listed.size > 1_000_000, "{listed:?}");
    assert_eq!(bundle.record.files.len(), 1, "{:?}", bundle.record.files);
    assert!(image.id.starts_with("sha256:"), "{}", image.id);
    assert_eq!(
        ctx.ok(&["verify", &hash]).trim(),
        format!("ok       {hash}")
    );

    // bottle wrote the archive itself: the build loads nothing into the engine. `docker load`
    // takes it, with the id the record names, under the bundle tag, labelled with its
    // component, entry point sidecar.
    let tag = bundle_tag(&bundle.id.hash);
    // Every test of this harness builds the same bundle image: no other test may remove it
    // between this load and the container's start.
    let _kept = ctx.keep_images();
    let loaded = docker_ok(&["load", "-i", bundle.path(&image.archive).to_str().unwrap()]);
    assert!(loaded.contains(&tag), "{loaded}");
    let inspect = |fmt: &str| docker_ok(&["image", "inspect", &tag, "--format", fmt]);
    assert_eq!(inspect("{{.Id}}"), image.id);
    assert_eq!(
        inspect(&format!(
            "{{{{index .Config.Labels \"{LABEL_COMPONENT}\"}}}}"
        )),
        format!("bundle/{}", bundle.id.hash)
    );
    assert_eq!(
        inspect("{{json .Config.Entrypoint}}"),
        r#"["/bottle","sidecar"]"#
    );

    // Run it as `bottle run` will: daemons as the command, the config component's pipelock
    // config mounted.
    let container = unique("bottle-test-sidecar");
    ctx.note_container(&container);
    let config = entry
        .config
        .path(&bottle::daemons::Daemon::Pipelock.config_file());
    // What a run mints and makes: a CA (here made by the test) and the audit log's folder.
    let ca = ctx.dir.path().join("ca");
    std::fs::create_dir_all(&ca).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(ca.join("pipelock.crt"), cert.pem()).unwrap();
    std::fs::write(ca.join("pipelock.key"), key.serialize_pem()).unwrap();
    let audit = ctx.dir.path().join("audit");
    std::fs::create_dir_all(&audit).unwrap();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &container,
        "--label",
        &format!("{}={}", support::LABEL_STORE, ctx.store_label),
        "-v",
        &format!("{}:/etc/bottle/pipelock.json:ro", config.display()),
        "-v",
        &format!("{}:/etc/bottle/ca:ro", ca.display()),
        "-v",
        &format!("{}:/var/log/bottle", audit.display()),
        &tag,
        "--daemons",
        "pipelock",
    ]);
    let logs = || {
        let out = Command::new("docker")
            .args(["logs", &container])
            .output()
            .unwrap();
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
    assert!(logs().contains("sidecar: starting pipelock (config folder /etc/bottle; 0 secret(s))"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.Running}}", &container]),
        "true",
        "the bundle stays up:\n{}",
        logs()
    );

    // Its pipelock answers on the container's address: a host off the allowlist gets 403.
    let ip = docker_ok(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &container,
    ]);
    assert_eq!(
        proxy_get(&format!("{ip}:8888"), "http://refused.test/"),
        403
    );
    // The audit line is written once the exchange ends, which may be just after the client
    // read its answer.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs().contains("audit GET refused.test:80/ refused rule=allowlist status=403") {
        assert!(
            Instant::now() < deadline,
            "no audit line in 10 s:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // …and its audit log, a JSON line, in the folder a run mounts there.
    let line = std::fs::read_to_string(audit.join("audit.jsonl")).unwrap();
    let event: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(event["host"], "refused.test");
    assert_eq!(event["decision"], "refused");
    assert_eq!(event["rule"], "allowlist");

    // `docker stop` (SIGTERM) ends it with 0.
    docker_ok(&["stop", "-t", "10", &container]);
    assert_eq!(
        docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &container]),
        "0"
    );
    assert!(
        logs().contains("sidecar: stopping on SIGTERM"),
        "{}",
        logs()
    );
}
