//! The streamed build context against the docker CLI, on the real engine.
//!
//! One context holds empty and nested folders, symlinks (to a file, to a folder, dangling), an
//! executable, and a `.dockerignore` with docker's documented patterns, exceptions, and the
//! walk's quirks. For each placement of the Dockerfile (inside the context, outside it, inside
//! but excluded) and each state of `.dockerignore` (kept, excluding itself, absent), the same
//! `FROM scratch` + `COPY . /ctx` is built once by the docker CLI's classic builder and once
//! through `context::scan` + `tar_stream` + `runtime::docker::build`; the two images' layers
//! must hold exactly the same paths, types, modes, owners, link targets and file contents
//! under `/ctx` (mtimes aside: docker sends the files' own).
//!
//! Every image a test makes is removed when it ends, also when it fails (`Images`).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bottle::context::{self, ContextError, DockerfileRef};
use bottle::digest::{Digest, file_digest};
use bottle::runtime::docker;

const DOCKERFILE: &str = "FROM scratch\nCOPY . /ctx\n";

/// docker's documented examples, exceptions, and the walk's quirks; each line's effect on the
/// fixture is in `fixture`.
const IGNORE: &str = "\
# comment
*/temp*
*/*/temp*
temp?
**/*.go
*.md
!README.md
/abs
./rel
trailing/
build
!build/keep.txt
cache
logs
!**/keep
.git
quirk
!quirk/x
q*
docker
";

/// One test at a time: the 20.10 engine's cache lookup for a `FROM scratch` step reads every
/// parentless image, and fails ("unable to find image") if one is removed meanwhile, as the
/// tests here remove theirs when they end.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The images a test made, removed when it ends, however it ends; with their untagged parents
/// (a label step leaves the `COPY` step's image as a parent), which no other build shares:
/// each comparison's context holds a `run-id` of its own.
struct Images(Mutex<Vec<String>>);

impl Images {
    fn new() -> Images {
        Images(Mutex::new(Vec::new()))
    }

    /// A tag no other test or run uses, removed with the others.
    fn tag(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let tag = format!("bottle-ctx-test-{}-{n}", std::process::id());
        self.0.lock().unwrap().push(tag.clone());
        tag
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for tag in self.0.lock().unwrap().iter() {
            let _ = Command::new("docker").args(["rmi", tag]).output();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Placement {
    Inside,
    Outside,
    InsideExcluded,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ignore {
    Kept,
    SelfExcluded,
    Absent,
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) {
    let p = root.join(rel);
    mkdir(p.parent().unwrap());
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The context `root/ctx` and the Dockerfile for `placement`. Modes are set explicitly:
/// bottle sends 0755/0644 whatever the folder holds, docker sends the files' own.
fn fixture(root: &Path, placement: Placement, ignore: Ignore) -> (PathBuf, PathBuf) {
    let ctx = root.join("ctx");
    mkdir(&ctx);
    for rel in ["empty", "nested/deep/empty2", "build/empty"] {
        mkdir(&ctx.join(rel));
    }
    let files = [
        "a.txt",                   // kept
        "nested/deep/er/file.txt", // kept, three folders down
        "somedir/temporary.txt",   // */temp*
        "somedir/subdir/temp.log", // */*/temp*
        "somedir/keep.txt",        // kept
        "tempa",                   // temp?
        "temp",                    // kept: temp? needs one more character
        "src/main.go",             // **/*.go
        "src/pkg/util.go",         // **/*.go
        "src/pkg/util.rs",         // kept
        "NOTES.md",                // *.md
        "README.md",               // !README.md
        "docs/guide.md",           // kept: *.md is anchored at the top
        "abs",                     // /abs
        "rel",                     // ./rel
        "trailing/x",              // trailing/
        "build/keep.txt",          // !build/keep.txt opens build: build/ is sent
        "build/junk",              // build
        "logs/keep",               // logs: !**/keep does not open logs
        "cache/deep/a",            // cache
        ".git/HEAD",               // .git
        "quirk/x", // quirk, !quirk/x; q* is skipped for quirk, so only tried on quirk/x
        "quirk/y", // quirk
    ];
    for f in files {
        write(&ctx, f, &format!("{f}\n"), 0o644);
    }
    write(&ctx, "bin/tool", "#!/bin/sh\necho tool\n", 0o755);
    write(&ctx, "docker/Dockerfile", DOCKERFILE, 0o644);
    write(&ctx, "Dockerfile", DOCKERFILE, 0o644);
    symlink("a.txt", ctx.join("link-a")).unwrap();
    symlink("nested", ctx.join("dirlink")).unwrap();
    symlink("nowhere/at/all", ctx.join("dangling")).unwrap();
    // Past the 100 bytes a tar header holds: GNU long-name and long-link entries.
    let long = format!("nested/deep/{}", "long-name-".repeat(12));
    write(&ctx, &long, "long\n", 0o644);
    symlink(
        format!("../../{long}"),
        ctx.join("nested/deep/er/long-link"),
    )
    .unwrap();
    match ignore {
        Ignore::Kept => write(&ctx, ".dockerignore", IGNORE, 0o644),
        Ignore::SelfExcluded => write(
            &ctx,
            ".dockerignore",
            &format!("{IGNORE}.dockerignore\n"),
            0o644,
        ),
        Ignore::Absent => {}
    }
    let dockerfile = match placement {
        Placement::Inside => ctx.join("Dockerfile"),
        Placement::InsideExcluded => ctx.join("docker/Dockerfile"),
        Placement::Outside => {
            write(root, "Dockerfile.outside", DOCKERFILE, 0o644);
            root.join("Dockerfile.outside")
        }
    };
    (ctx, dockerfile)
}

fn cli_build(ctx: &Path, dockerfile: &Path, tag: &str) {
    let out = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "--no-cache", "--force-rm", "-t", tag, "-f"])
        .arg(dockerfile)
        .arg(ctx)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds through `tar_stream` + `docker::build`; tries again (twice at most) when the engine
/// trips over an image that other work on this engine removed during its cache lookup.
async fn stream_build(ctx: &Path, dockerfile: &Path, tag: &str) -> anyhow::Result<String> {
    let mut tries = 0;
    loop {
        match stream_build_once(ctx, dockerfile, tag).await {
            Err(e) if tries < 2 && format!("{e:#}").contains("unable to find image") => tries += 1,
            result => return result,
        }
    }
}

async fn stream_build_once(ctx: &Path, dockerfile: &Path, tag: &str) -> anyhow::Result<String> {
    let entries = context::scan(ctx)?;
    let (digest, _) = file_digest(dockerfile)?;
    let df = DockerfileRef {
        host_path: dockerfile.to_path_buf(),
        digest,
    };
    let stream = context::tar_stream(ctx.to_path_buf(), entries, df);
    let engine = docker::connect().await?;
    let labels = HashMap::from([("bottle.test".to_string(), "build_context".to_string())]);
    docker::build(&engine, stream, tag, labels, |_| {}).await
}

/// One path under `/ctx` in an image layer.
#[derive(Debug, PartialEq)]
struct Row {
    kind: char,
    mode: u32,
    owner: (u64, u64),
    link: String,
    content: Option<Digest>,
}

/// Every path under `ctx/` in the layers of `tag` (from `docker save`). The name docker gives
/// an added Dockerfile (`.dockerfile.` and 20 hex) is written `.dockerfile.NAME` in contents.
fn listing(tag: &str) -> BTreeMap<String, Row> {
    let out = Command::new("docker").args(["save", tag]).output().unwrap();
    assert!(out.status.success(), "docker save {tag}");
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for e in tar::Archive::new(out.stdout.as_slice()).entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        files.insert(name, bytes);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let name = regex::Regex::new(r"\.dockerfile\.[0-9a-f]{20}").unwrap();
    let mut rows = BTreeMap::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let bytes = &files[layer.as_str().unwrap()];
        for e in tar::Archive::new(bytes.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let Some(rel) = path.strip_prefix("ctx/") else {
                continue;
            };
            let h = e.header().clone();
            let link = e
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            let text = String::from_utf8_lossy(&content);
            let content = name.replace_all(&text, ".dockerfile.NAME");
            let kind = char::from(h.entry_type().as_byte());
            let row = Row {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                owner: (h.uid().unwrap(), h.gid().unwrap()),
                link: link.unwrap_or_default(),
                content: (kind == '0').then(|| Digest::of(content.as_bytes())),
            };
            rows.insert(rel.trim_end_matches('/').to_string(), row);
        }
    }
    rows
}

/// Builds each case both ways and compares the images.
async fn equivalent(placement: Placement, ignores: &[Ignore]) {
    let _serial = SERIAL.lock().await;
    let images = Images::new();
    for &ignore in ignores {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, dockerfile) = fixture(dir.path(), placement, ignore);
        let (cli_tag, our_tag) = (images.tag(), images.tag());
        // Content no other build has, and the CLI's build second and uncached: neither build
        // can take a cached step from another (which another test may be removing).
        write(&ctx, "run-id", &our_tag, 0o644);
        stream_build(&ctx, &dockerfile, &our_tag)
            .await
            .unwrap_or_else(|e| panic!("{placement:?}/{ignore:?}: {e:#}"));
        cli_build(&ctx, &dockerfile, &cli_tag);
        let (cli, ours) = (listing(&cli_tag), listing(&our_tag));
        assert!(
            cli.contains_key("empty"),
            "sanity: the CLI's image has /ctx/empty"
        );
        let keys = |m: &BTreeMap<String, Row>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&ours), keys(&cli), "{placement:?}/{ignore:?}: paths");
        for (path, row) in &cli {
            assert_eq!(&ours[path], row, "{placement:?}/{ignore:?}: {path}");
        }
    }
}

#[tokio::test]
async fn dockerfile_inside_the_context_matches_the_cli() {
    equivalent(
        Placement::Inside,
        &[Ignore::Kept, Ignore::SelfExcluded, Ignore::Absent],
    )
    .await;
}

#[tokio::test]
async fn dockerfile_outside_the_context_matches_the_cli() {
    equivalent(
        Placement::Outside,
        &[Ignore::Kept, Ignore::SelfExcluded, Ignore::Absent],
    )
    .await;
}

#[tokio::test]
async fn dockerfile_inside_but_excluded_matches_the_cli() {
    equivalent(
        Placement::InsideExcluded,
        &[Ignore::Kept, Ignore::SelfExcluded],
    )
    .await;
}

#[tokio::test]
async fn a_file_changed_after_scan_refuses_the_build() {
    let _serial = SERIAL.lock().await;
    let images = Images::new();
    let tag = images.tag();
    let dir = tempfile::tempdir().unwrap();
    let (ctx, dockerfile) = fixture(dir.path(), Placement::Inside, Ignore::Kept);
    write(&ctx, "run-id", &tag, 0o644);
    // Enough bytes ahead of the changed file that the engine is mid-context when it fails.
    write(&ctx, "big.bin", &"x".repeat(3 << 20), 0o644);
    let entries = context::scan(&ctx).unwrap();
    write(&ctx, "somedir/keep.txt", "changed\n", 0o644);
    let (digest, _) = file_digest(&dockerfile).unwrap();
    let df = DockerfileRef {
        host_path: dockerfile,
        digest,
    };
    let stream = context::tar_stream(ctx.clone(), entries, df);
    let engine = docker::connect().await.unwrap();
    let err = docker::build(&engine, stream, &tag, HashMap::new(), |_| {})
        .await
        .expect_err("a changed input must fail the build");
    match err.downcast_ref::<ContextError>() {
        Some(ContextError::Changed { path }) => assert_eq!(*path, ctx.join("somedir/keep.txt")),
        _ => panic!("expected ContextError::Changed, got: {err:#}"),
    }
    assert!(err.to_string().contains("run the build again"), "{err}");
    let inspect = Command::new("docker")
        .args(["image", "inspect", &tag])
        .output()
        .unwrap();
    assert!(
        !inspect.status.success(),
        "the engine must not have made {tag}"
    );
}
