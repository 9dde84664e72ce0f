//! Image archives (`bottle::oci`) against the real Docker Engine: an image written by
//! `write_image` loads (docker CLI and bollard, as `bottle run` loads images) with the id it
//! reports and runs; the same Dockerfile built twice with no shared cache saves to different
//! archives that `normalize` makes bit-identical, and that normalized image runs as built;
//! imported PAX layers (sub-second times, an xattr, a long path) lose only their times; smolvm
//! takes the archives for a machine.
//!
//! The docker CLI is used by the tests only. Every image (intermediate build parents
//! included) and container a test makes is removed by a guard, also when it fails; tags are
//! unique per test (`bottle-oci-test-<pid>-<n>`), and nothing engine-wide is pruned.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bottle::oci::{ImageConfig, LayerFile, image_id, normalize, write_image};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A repository name no other test (or test run) uses.
fn unique_name() -> String {
    format!(
        "bottle-oci-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Removes the test's containers, smolvm machines and images (tags, then image ids, in the
/// order given: children before parents), ignoring what is already gone.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    machines: Vec<(String, PathBuf)>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // No asserting here: a panic while a failed test unwinds would abort.
        for c in &self.containers {
            let _ = Command::new("docker").args(["rm", "-f", c]).output();
        }
        for (name, state) in &self.machines {
            let _ = Command::new("smolvm")
                .args([
                    "machine",
                    "delete",
                    "--name",
                    name,
                    "--force",
                    "--state-dir",
                ])
                .arg(state)
                .output();
        }
        for image in &self.images {
            let _ = Command::new("docker")
                .args(["rmi", "--no-prune", image])
                .output();
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

/// `docker run --rm` of `image` with `args`, as a container the guard removes; its stdout.
fn docker_run(cleanup: &mut Cleanup, image: &str, args: &[&str]) -> String {
    let name = unique_name();
    cleanup.containers.push(name.clone());
    let mut all = vec!["run", "--rm", "--name", &name, image];
    all.extend_from_slice(args);
    docker(&all)
}

/// `docker load -i archive`; checks that it tagged `tag` with image `id`.
fn load(archive: &Path, tag: &str, id: &str) {
    let out = docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {tag}")), "{out}");
    assert_eq!(docker(&["image", "inspect", "-f", "{{.Id}}", tag]), id);
}

fn busybox_layer() -> Vec<LayerFile> {
    vec![LayerFile {
        path: "bin/busybox".into(),
        source: "/bin/busybox".into(),
        mode: 0o755,
    }]
}

fn busybox_config() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/bin/busybox".into()],
        cmd: vec!["echo".into(), "default command".into()],
        env: vec!["PATH=/bin".into(), "GREETING=from bottle".into()],
        labels: BTreeMap::from([("bottle.test".into(), "oci".into())]),
    }
}

#[test]
fn written_image_loads_with_its_id_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let tag = format!("{}:t", unique_name());
    cleanup.images.push(tag.clone());
    let archive = dir.path().join("image.tar");
    let info = write_image(&archive, &busybox_layer(), &busybox_config(), Some(&tag)).unwrap();
    assert_eq!(info.layers, 1);
    assert_eq!(image_id(&archive).unwrap(), info.id);

    load(&archive, &tag, &info.id);
    assert_eq!(docker_run(&mut cleanup, &tag, &[]), "default command");
    let out = docker_run(
        &mut cleanup,
        &tag,
        &["sh", "-c", "echo $GREETING $((6 * 7))"],
    );
    assert_eq!(out, "from bottle 42");
    let label = docker(&[
        "image",
        "inspect",
        "-f",
        "{{index .Config.Labels \"bottle.test\"}}",
        &tag,
    ]);
    assert_eq!(label, "oci");

    // As `bottle run` loads it: through the API (bollard's import_image), by id.
    docker(&["rmi", "--no-prune", &tag]);
    let loaded = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let engine = bottle::runtime::docker::connect().await?;
        bottle::runtime::docker_run::ensure_image(&engine, &info.id, &archive).await
    });
    assert!(loaded.unwrap(), "ensure_image loaded the archive");
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Id}}", &tag]),
        info.id
    );
}

/// The images of a legacy `docker build`: the image, then each intermediate parent.
fn image_chain(image: &str) -> Vec<String> {
    let mut chain = vec![docker(&["image", "inspect", "-f", "{{.Id}}", image])];
    loop {
        let last = chain.last().unwrap().clone();
        let parent = docker(&["image", "inspect", "-f", "{{.Parent}}", &last]);
        if parent.is_empty() {
            return chain;
        }
        chain.push(parent);
    }
}

/// Builds `context` with the legacy builder (`DOCKER_BUILDKIT=0`) as `tag`, saves it into
/// `dest`, then removes the image and its intermediate parents (the builder's cache of this
/// Dockerfile, which only this test's unique context file leads to). Returns the build log.
fn build_save_forget(cleanup: &mut Cleanup, context: &Path, tag: &str, dest: &Path) -> String {
    cleanup.images.push(tag.to_string());
    // Docker 20.10's cache lookup for a `FROM scratch` step reads every parentless image and
    // fails ("unable to find image") when one is removed meanwhile, as the other tests of
    // this file do: try again then.
    let mut tries = 0;
    let out = loop {
        tries += 1;
        let out = run(Command::new("docker")
            .env("DOCKER_BUILDKIT", "0")
            .args(["build", "--force-rm", "-t", tag])
            .arg(context));
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() || tries == 3 || !log.contains("unable to find image") {
            break out;
        }
    };
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "docker build failed:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain = image_chain(tag);
    cleanup.images.extend(chain.iter().cloned());
    docker(&["save", tag, "-o", dest.to_str().unwrap()]);
    docker(&["rmi", "--no-prune", tag]); // the image itself: its only tag
    for id in &chain[1..] {
        docker(&["rmi", "--no-prune", id]);
    }
    log
}

#[test]
fn two_clean_builds_normalize_to_identical_archives() {
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let name = unique_name();
    let context = dir.path().join("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::copy("/bin/busybox", context.join("busybox"))
        .expect("/bin/busybox (Debian's busybox-static; run scripts/setup)");
    // The first step copies a file no other build has, so every intermediate image (the
    // builder's cache) is this test's own and removing them touches nothing else.
    std::fs::write(
        context.join("unique"),
        format!("{name} {:?}\n", std::time::SystemTime::now()),
    )
    .unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\n\
         COPY unique /.unique\n\
         COPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
         RUN mkdir -p /home/node\n\
         LABEL org.example.bottle-oci=reproducible\n\
         USER 1000:1000\n",
    )
    .unwrap();

    let build_tag = format!("{name}:build");
    let (save1, save2) = (dir.path().join("save1.tar"), dir.path().join("save2.tar"));
    build_save_forget(&mut cleanup, &context, &build_tag, &save1);
    std::thread::sleep(Duration::from_millis(1500));
    let log = build_save_forget(&mut cleanup, &context, &build_tag, &save2);
    assert!(
        !log.contains("Using cache"),
        "the second build used a cache:\n{log}"
    );
    assert_ne!(
        std::fs::read(&save1).unwrap(),
        std::fs::read(&save2).unwrap(),
        "two clean builds saved identical archives; the test proves nothing"
    );

    let tag = format!("{name}:normal");
    let (norm1, norm2) = (dir.path().join("norm1.tar"), dir.path().join("norm2.tar"));
    let info = normalize(&save1, &norm1, Some(&tag)).unwrap();
    assert_eq!(normalize(&save2, &norm2, Some(&tag)).unwrap(), info);
    assert!(
        std::fs::read(&norm1).unwrap() == std::fs::read(&norm2).unwrap(),
        "the normalized archives differ"
    );
    assert_eq!(info.layers, 4);
    assert_eq!(image_id(&norm1).unwrap(), info.id);

    cleanup.images.insert(0, tag.clone());
    load(&norm1, &tag, &info.id);
    let bin = docker_run(&mut cleanup, &tag, &["ls", "/bin"]);
    for applet in ["busybox", "ls", "sh"] {
        assert!(
            bin.lines().any(|l| l == applet),
            "/bin lacks {applet}: {bin}"
        );
    }
    assert_eq!(docker_run(&mut cleanup, &tag, &["id", "-u"]), "1000");
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", &tag]),
        "1000:1000"
    );
    assert_eq!(
        docker_run(&mut cleanup, &tag, &["ls", "-d", "/home/node"]),
        "/home/node"
    );
}

/// smolvm 1.32.2 takes an archive for a machine at `machine create` (it copies it; its guest
/// agent unpacks it at start, which cannot run here), so this checks the CLI accepts both
/// archives bottle writes, and that a machine made from one can be deleted.
#[test]
fn smolvm_machine_create_accepts_the_archives() {
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let state = dir.path().join("smolvm");
    let written = dir.path().join("written.tar");
    write_image(&written, &busybox_layer(), &busybox_config(), Some("x:1")).unwrap();
    let normalized = dir.path().join("normalized.tar");
    normalize(&written, &normalized, None).unwrap();
    for archive in [&written, &normalized] {
        let machine = unique_name();
        cleanup.machines.push((machine.clone(), state.clone()));
        let out = run(Command::new("smolvm")
            .args(["machine", "create", "--name", &machine, "--image"])
            .arg(archive)
            .arg("--state-dir")
            .arg(&state));
        assert!(
            out.status.success(),
            "smolvm machine create --image {} failed: {}",
            archive.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = run(Command::new("smolvm")
            .args([
                "machine",
                "delete",
                "--name",
                &machine,
                "--force",
                "--state-dir",
            ])
            .arg(&state));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A PAX record, `LEN KEY=VALUE\n`.
fn pax_record(key: &str, value: &str) -> String {
    let body = format!(" {key}={value}\n");
    let mut len = body.len();
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}")
}

/// Appends a PAX header holding `records`, then a regular file `name` with `body`.
fn pax_file(out: &mut Vec<u8>, name: &str, records: &str, body: &[u8], mode: u32, when: u64) {
    let pad = |out: &mut Vec<u8>| out.resize(out.len().div_ceil(512) * 512, 0);
    let mut pax = tar::Header::new_ustar();
    pax.set_entry_type(tar::EntryType::XHeader);
    pax.set_path(format!(
        "PaxHeaders.0/{}",
        &name[name.len().saturating_sub(80)..]
    ))
    .unwrap();
    pax.set_size(records.len() as u64);
    pax.set_mtime(when);
    pax.set_cksum();
    out.extend_from_slice(pax.as_bytes());
    out.extend_from_slice(records.as_bytes());
    pad(out);
    let mut file = tar::Header::new_ustar();
    file.set_path(&name[name.len().saturating_sub(90)..])
        .unwrap();
    file.set_size(body.len() as u64);
    file.set_mode(mode);
    file.set_mtime(when);
    file.set_cksum();
    out.extend_from_slice(file.as_bytes());
    out.extend_from_slice(body);
    pad(out);
}

/// A layer as GNU tar writes it with `--format=pax --xattrs`: sub-second times in PAX records,
/// an xattr, a path too long for the header.
fn pax_layer(long: &str, when: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let times = |t: u64| {
        ["mtime", "atime", "ctime"]
            .map(|k| pax_record(k, &format!("{t}.{}", t % 7)))
            .concat()
    };
    let busybox = std::fs::read("/bin/busybox").unwrap();
    pax_file(&mut out, "bin/busybox", &times(when), &busybox, 0o755, when);
    let records = format!(
        "{}{}{}",
        pax_record("path", long),
        times(when + 1),
        pax_record("SCHILY.xattr.user.bottle", "yes")
    );
    pax_file(&mut out, long, &records, b"hello\n", 0o640, when + 1);
    out.resize(out.len() + 1024, 0);
    out
}

/// The entries of the first layer of a normalized archive: path, mtime and PAX keys.
fn layer_entries(archive: &Path) -> Vec<(String, u64, Vec<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let out = run(Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(dir.path()));
    assert!(out.status.success());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    let layer = dir.path().join(manifest[0]["Layers"][0].as_str().unwrap());
    let mut tar = tar::Archive::new(std::fs::File::open(layer).unwrap());
    let mut entries = Vec::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let keys = match e.pax_extensions().unwrap() {
            Some(pax) => pax.map(|r| r.unwrap().key().unwrap().to_string()).collect(),
            None => Vec::new(),
        };
        let path = e.path().unwrap().to_string_lossy().into_owned();
        entries.push((path, e.header().mtime().unwrap(), keys));
    }
    entries
}

#[test]
fn imported_pax_layers_lose_their_times_and_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cleanup = Cleanup::default();
    let name = unique_name();
    let long = format!("{}/{}/file", "d".repeat(70), "e".repeat(70));
    let mut normalized = Vec::new();
    let mut saves = Vec::new();
    for when in [1_000_000_000u64, 1_700_000_000] {
        let tag = format!("{name}:{when}");
        cleanup.images.push(tag.clone());
        let mut child = Command::new("docker")
            .args(["import", "-", &tag])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&pax_layer(&long, when))
            .unwrap();
        assert!(child.wait().unwrap().success(), "docker import failed");
        let save = dir.path().join(format!("save-{when}.tar"));
        docker(&["save", &tag, "-o", save.to_str().unwrap()]);
        docker(&["rmi", "--no-prune", &tag]);
        let dest = dir.path().join(format!("normal-{when}.tar"));
        let tag = format!("{name}:normal");
        normalize(&save, &dest, Some(&tag)).unwrap();
        saves.push(std::fs::read(&save).unwrap());
        normalized.push(dest);
    }
    assert_ne!(saves[0], saves[1]);
    let bytes: Vec<Vec<u8>> = normalized
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(bytes[0] == bytes[1], "the normalized archives differ");

    let entries = layer_entries(&normalized[0]);
    assert_eq!(
        entries,
        [
            ("bin/busybox".to_string(), 0, vec![]),
            (
                long.clone(),
                0,
                vec!["path".to_string(), "SCHILY.xattr.user.bottle".to_string()]
            ),
        ]
    );
    let tag = format!("{name}:normal");
    cleanup.images.push(tag.clone());
    load(&normalized[0], &tag, &image_id(&normalized[0]).unwrap());
    let out = docker_run(
        &mut cleanup,
        &tag,
        &["/bin/busybox", "cat", &format!("/{long}")],
    );
    assert_eq!(out, "hello");
}
