//! Tests of the tar stream: layout, placement of the Dockerfile, changed inputs, chunking.

use super::*;
use crate::context::scan;
use futures_util::StreamExt;
use std::os::unix::fs::PermissionsExt;

struct Drained {
    bytes: Vec<u8>,
    largest_chunk: usize,
    error: Option<io::Error>,
    done: Result<u64, ContextError>,
}

async fn drain(mut ctx: ContextStream) -> Drained {
    let (mut bytes, mut largest_chunk, mut error) = (Vec::new(), 0, None);
    while let Some(item) = ctx.stream.next().await {
        match item {
            Ok(chunk) => {
                largest_chunk = largest_chunk.max(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            Err(e) => error = Some(e),
        }
    }
    let done = ctx.done.await.unwrap();
    Drained {
        bytes,
        largest_chunk,
        error,
        done,
    }
}

/// (name, type, mode, mtime, uid, gid, link target, content) of each entry.
type Row = (String, char, u32, u64, u64, u64, String, Vec<u8>);

fn listing(tar_bytes: &[u8]) -> Vec<Row> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut content = Vec::new();
        e.read_to_end(&mut content).unwrap();
        out.push((
            e.path().unwrap().to_string_lossy().into_owned(),
            char::from(h.entry_type().as_byte()),
            h.mode().unwrap(),
            h.mtime().unwrap(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            link.unwrap_or_default(),
            content,
        ));
    }
    out
}

fn context() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::create_dir_all(root.join("df")).unwrap();
    std::fs::write(root.join("a.txt"), "a").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    let exec = std::fs::Permissions::from_mode(0o700);
    std::fs::set_permissions(root.join("run.sh"), exec).unwrap();
    std::fs::write(root.join("df/Dockerfile"), "FROM scratch\n").unwrap();
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    dir
}

fn dockerfile(path: PathBuf) -> DockerfileRef {
    let (digest, _) = crate::digest::file_digest(&path).unwrap();
    DockerfileRef {
        host_path: path,
        digest,
    }
}

#[tokio::test]
async fn entries_in_order_with_fixed_headers_and_the_same_bytes_each_time() {
    let dir = context();
    let outside = tempfile::tempdir().unwrap();
    let df_path = outside.path().join("Dockerfile");
    std::fs::write(&df_path, "FROM scratch\nCOPY . /\n").unwrap();
    let entries = scan(dir.path()).unwrap();
    let run = || {
        let ctx = tar_stream(
            dir.path().into(),
            entries.clone(),
            dockerfile(df_path.clone()),
        );
        let name = ctx.dockerfile_name.clone();
        async move { (name, drain(ctx).await) }
    };
    let (name, first) = run().await;
    let (_, second) = run().await;
    assert_eq!(first.done.as_ref().unwrap(), &(first.bytes.len() as u64));
    assert!(
        first.bytes == second.bytes,
        "the same inputs give the same bytes"
    );
    let hex = dockerfile(df_path).digest.hex();
    assert_eq!(name, format!(".dockerfile.{}", &hex[..20]));
    let rows = listing(&first.bytes);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let ignore = format!(".dockerignore\n{name}\n").into_bytes();
    assert_eq!(
        names,
        [
            name.as_str(),
            ".dockerignore",
            "a.txt",
            "df",
            "df/Dockerfile",
            "empty",
            "link",
            "run.sh"
        ]
    );
    for r in &rows {
        assert_eq!((r.3, r.4, r.5), (0, 0, 0), "{}: mtime and owner", r.0);
    }
    let find = |n: &str| rows.iter().find(|r| r.0 == n).unwrap();
    assert_eq!(find(".dockerignore").7, ignore);
    assert_eq!((find("empty").1, find("empty").2), ('5', 0o755));
    assert_eq!((find("a.txt").1, find("a.txt").2), ('0', 0o644));
    assert_eq!(find("run.sh").2, 0o755);
    assert_eq!((find("link").1, find("link").6.as_str()), ('2', "a.txt"));
    assert_eq!(find(&name).7, b"FROM scratch\nCOPY . /\n");
}

#[tokio::test]
async fn dockerfile_inside_kept_or_excluded() {
    let dir = context();
    let df = dockerfile(dir.path().join("df/Dockerfile"));
    let entries = scan(dir.path()).unwrap();
    let ctx = tar_stream(dir.path().into(), entries.clone(), df.clone());
    assert_eq!(ctx.dockerfile_name, "df/Dockerfile");
    let kept = drain(ctx).await;
    assert!(kept.done.is_ok());
    let names: Vec<String> = listing(&kept.bytes).into_iter().map(|r| r.0).collect();
    assert_eq!(names, entries.keys().cloned().collect::<Vec<_>>());

    std::fs::write(dir.path().join(".dockerignore"), "df\n").unwrap();
    let entries = scan(dir.path()).unwrap();
    assert!(!entries.contains_key("df/Dockerfile"));
    let ctx = tar_stream(dir.path().into(), entries, df);
    assert_eq!(ctx.dockerfile_name, "df/Dockerfile");
    let excluded = drain(ctx).await;
    assert!(excluded.done.is_ok());
    let rows = listing(&excluded.bytes);
    let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    // The context's own .dockerignore (which excludes df) goes as it is.
    assert_eq!(
        names,
        [
            ".dockerignore",
            "a.txt",
            "df",
            "df/Dockerfile",
            "empty",
            "link",
            "run.sh"
        ]
    );
    assert_eq!(rows[0].7, b"df\n");
}

#[tokio::test]
async fn a_changed_input_ends_the_stream_with_changed() {
    let dir = context();
    let df = dockerfile(dir.path().join("df/Dockerfile"));
    let entries = scan(dir.path()).unwrap();
    type Change = fn(&Path);
    let cases: [(&str, Change); 3] = [
        ("a.txt", |p| std::fs::write(p, "b").unwrap()),
        ("link", |p| {
            std::fs::remove_file(p).unwrap();
            std::os::unix::fs::symlink("run.sh", p).unwrap();
        }),
        ("run.sh", |p| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap()
        }),
    ];
    for (rel, change) in cases {
        let dir = context();
        change(&dir.path().join(rel));
        let out = drain(tar_stream(dir.path().into(), entries.clone(), df.clone())).await;
        assert!(out.error.is_some(), "{rel}: the stream ends with an error");
        match out.done {
            Err(ContextError::Changed { path }) => assert_eq!(path, dir.path().join(rel)),
            other => panic!("{rel}: {other:?}"),
        }
    }
    // The Dockerfile is checked against its own digest too.
    let outside = tempfile::tempdir().unwrap();
    let df_path = outside.path().join("Dockerfile");
    std::fs::write(&df_path, "FROM scratch\n").unwrap();
    let df = dockerfile(df_path.clone());
    std::fs::write(&df_path, "FROM scratch\nRUN x\n").unwrap();
    let out = drain(tar_stream(dir.path().into(), entries, df)).await;
    assert!(matches!(out.done, Err(ContextError::Changed { path }) if path == df_path));
}

#[tokio::test]
async fn large_files_go_in_bounded_chunks() {
    let dir = context();
    let big: Vec<u8> = (0..(3 << 20) + 7).map(|i: usize| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("big"), &big).unwrap();
    let df = dockerfile(dir.path().join("df/Dockerfile"));
    let entries = scan(dir.path()).unwrap();
    let out = drain(tar_stream(dir.path().into(), entries, df)).await;
    assert!(out.done.is_ok());
    assert_eq!(out.largest_chunk, CHUNK);
    let rows = listing(&out.bytes);
    assert!(rows.iter().any(|r| r.0 == "big" && r.7 == big));
}

#[tokio::test]
async fn a_dropped_stream_leaves_the_producer_abandoned() {
    let dir = context();
    std::fs::write(dir.path().join("big"), vec![7u8; 4 << 20]).unwrap();
    let df = dockerfile(dir.path().join("df/Dockerfile"));
    let ctx = tar_stream(dir.path().into(), scan(dir.path()).unwrap(), df);
    drop(ctx.stream);
    assert!(matches!(
        ctx.done.await.unwrap(),
        Err(ContextError::Abandoned)
    ));
}
