//! Sharing entries through S3: real Garage servers (the `garage` crate's binary, which
//! `scripts/setup` installs), started by the test on loopback ports with their own folders —
//! one node, and a three-node cluster with replication factor 3 that still serves a pull
//! with one node stopped. Each server is stopped and its folder removed when the test ends,
//! also on failure.
//!
//! Its own test binary, not a module of `tests/engine/`: it measures a pull's peak memory as
//! the `ru_maxrss` `wait4` reports, and a child a process spawns (vfork, then exec) starts with
//! its parent's peak resident memory as its own. In the engine harness, whose process other
//! tests had grown to ~300 MiB, the pull "peaked" there, over the 64 MiB bound; in a binary of
//! its own, the parent stays small.

#[allow(
    dead_code,
    unused_imports,
    reason = "the engine tests' support, of which this binary uses a part"
)]
mod support;

use std::process::Command;

use support::garage::{BUCKET, Garage};
use support::share::{first_chunk, keygen, output_with_peak_rss};
use support::*;

fn ok_json(ctx: &TestContext, cmd: Command, args: &[&str]) -> serde_json::Value {
    let out = ctx.output_of(cmd, args);
    assert!(out.status.success(), "bottle {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn an_entry_pushed_to_garage_is_pulled_into_an_empty_store_and_runs() {
    let garage = Garage::start(1);
    let src = TestContext::new("share-s3-src");
    let dst = TestContext::new("share-s3-dst");
    let hash = src.build(&src.recipe());
    let (key, public) = keygen(&src, "ci-1");
    let url = format!("s3://{BUCKET}/team");
    let sign = key.to_str().unwrap();
    let push = ["push", &hash, "--json", "--to", &url, "--sign-key", sign];
    let r = ok_json(&src, garage.cmd(&src, 0), &push);
    assert_eq!(r["components"].as_array().unwrap().len(), 3, "{r}");
    let r = ok_json(&src, garage.cmd(&src, 0), &push);
    assert_eq!(
        r["chunks_uploaded"], 0,
        "a second push uploads nothing: {r}"
    );
    let pull = ["pull", &hash, "--json", "--from", &url, "--trust", &public];
    // The laptop names the server in its config file, the credentials in its environment.
    let r = ok_json(&dst, garage.cmd_configured(&dst, 0), &pull);
    assert_eq!(r["components"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    let out = dst.output(&["run", &hash, "--", "sh", "-c", "echo ran as $(id -un)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ran as node");
    // gc lists through S3: it keeps the entry and everything it names.
    let r = ok_json(
        &src,
        garage.cmd(&src, 0),
        &["gc", "--json", "--remote", &url],
    );
    assert_eq!(r["kept"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["removed_chunks"], 0, "{r}");
    let r = ok_json(&src, garage.cmd(&src, 0), &push);
    assert_eq!(r["chunks_uploaded"], 0, "{r}");
    // Keeping nothing of it (another hash): everything of the entry goes.
    let none = "0".repeat(64);
    let r = ok_json(
        &src,
        garage.cmd(&src, 0),
        &["gc", "--json", "--remote", &url, "--keep", &none],
    );
    assert_eq!(r["removed_components"], 3, "{r}");
    let r = ok_json(&src, garage.cmd(&src, 0), &push);
    assert_eq!(
        r["components"].as_array().unwrap().len(),
        3,
        "pushed whole again: {r}"
    );
    // Wrong credentials: refused, naming the cache.
    let other = TestContext::new("share-s3-wrong");
    let mut c = garage.cmd(&other, 0);
    c.env("AWS_SECRET_ACCESS_KEY", "wrong");
    let out = other.output_of(c, &pull);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&url), "{}", stderr(&out));
    assert!(!other.store.exists());
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

#[test]
fn a_three_node_garage_serves_a_pull_with_one_node_stopped() {
    let mut garage = Garage::start(3);
    let src = TestContext::new("share-s3c-src");
    let dst = TestContext::new("share-s3c-dst");
    let hash = src.build(&src.recipe());
    let (key, public) = keygen(&src, "ci-1");
    let url = format!("s3://{BUCKET}");
    let push = [
        "push",
        &hash,
        "--json",
        "--to",
        &url,
        "--sign-key",
        key.to_str().unwrap(),
    ];
    ok_json(&src, garage.cmd(&src, 0), &push);
    garage.nodes[2].stop();
    let pull = ["pull", &hash, "--json", "--from", &url, "--trust", &public];
    let r = ok_json(&dst, garage.cmd(&dst, 0), &pull);
    assert_eq!(r["components"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

/// Writes `len` zero bytes at `key` of the bucket (a multipart upload, 16 MiB at a time).
fn plant_zeros(garage: &Garage, key: &str, len: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use object_store::ObjectStore;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(format!("http://127.0.0.1:{}", garage.nodes[0].s3))
            .with_allow_http(true)
            .with_region("garage")
            .with_bucket_name(BUCKET)
            .with_access_key_id(&garage.key_id)
            .with_secret_access_key(&garage.secret)
            .build()
            .unwrap();
        let part = 16 << 20;
        let upload = store
            .put_multipart(&object_store::path::Path::from(key))
            .await
            .unwrap();
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, part);
        let zeros = bytes::Bytes::from(vec![0u8; part]);
        for _ in 0..len / part as u64 {
            w.wait_for_capacity(2).await.unwrap();
            w.put(zeros.clone());
        }
        w.finish().await.unwrap();
    });
}

#[test]
fn a_chunk_served_as_a_gigabyte_by_garage_is_refused_with_flat_memory() {
    let garage = Garage::start(1);
    let src = TestContext::new("share-s3-huge-src");
    let hash = src.build(&src.recipe());
    let m = src.manifest(&hash);
    let (key, public) = keygen(&src, "ci-1");
    // The same push to a folder, to read the chunk list from disk.
    let folder = src.dir.path().join("cache");
    support::share::push(&src, &hash, &folder, &key);
    let url = format!("s3://{BUCKET}/team");
    let sign = key.to_str().unwrap();
    ok_json(
        &src,
        garage.cmd(&src, 0),
        &["push", &hash, "--json", "--to", &url, "--sign-key", sign],
    );
    let (chunk, size) = first_chunk(&folder, &m, bottle::hash::ComponentKind::Guest);
    plant_zeros(&garage, &format!("team/{chunk}"), 1 << 30);
    let dst = TestContext::new("share-s3-huge-dst");
    let pull = ["pull", &hash, "--from", &url, "--trust", &public];
    let (out, peak) = output_with_peak_rss(garage.cmd(&dst, 0), &pull);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("refused entry {hash}")), "{err}");
    assert!(err.contains(&chunk), "the chunk is not named: {err}");
    assert!(err.contains(&format!("at most {size} bytes")), "{err}");
    assert!(peak < 64 << 10, "the pull peaked at {peak} KiB");
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

/// A loopback "S3 server" that answers every request with a 307 to another listener, which
/// is returned too (a redirect followed would connect there); and the request lines it read.
fn redirecting_server() -> (
    u16,
    std::net::TcpListener,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    target.set_nonblocking(true).unwrap();
    let elsewhere = target.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            let _ = r.read_line(&mut first);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            log.lock().unwrap().push(first.trim().to_string());
            let _ = write!(
                conn,
                "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{elsewhere}/elsewhere\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, target, seen)
}

#[test]
fn s3_errors_name_their_cause_a_denial_with_the_bucket_and_key_and_a_redirect_not_followed() {
    let garage = Garage::start(1);
    let ctx = TestContext::new("share-s3-errors");
    let hash = "ab".repeat(32);
    let url = format!("s3://{BUCKET}/team");
    let manifest = format!("{url}/v1/entries/{hash}.json");
    let pull = ["pull", &hash, "--from", &url, "--no-check-sigs"];
    // The wrong secret: denied, naming the object it asked for and what to check.
    let mut c = garage.cmd(&ctx, 0);
    c.env("AWS_SECRET_ACCESS_KEY", "wrong");
    let out = ctx.output_of(c, &pull);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{manifest}: denied")), "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    // The right one, for comparison: the entry is simply not there.
    let out = ctx.output_of(garage.cmd(&ctx, 0), &pull);
    assert!(
        stderr(&out).contains("is not in the cache"),
        "{}",
        stderr(&out)
    );

    // A server that redirects: named as a redirect, and not followed (the request would go
    // again, its signature made for another host, and a failure there would hide the cause).
    let (port, target, seen) = redirecting_server();
    let mut c = garage.cmd(&ctx, 0);
    c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    let out = ctx.output_of(c, &pull);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "one request, not retried: {err}"
    );
    assert!(err.contains(&format!("{manifest}: redirected")), "{err}");
    assert!(err.contains("307"), "{err}");
    assert!(
        matches!(target.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the redirect was followed: {err}"
    );
    assert!(!ctx.store.exists());
}
