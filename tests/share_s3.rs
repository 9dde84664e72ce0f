//! Sharing entries through S3: real Garage servers (the `garage` crate's binary, which
//! `scripts/setup` installs), started by the test on loopback ports with their own folders —
//! one node, and a three-node cluster with replication factor 3 that still serves a pull
//! with one node stopped. Each server is stopped and its folder removed when the test ends,
//! also on failure.

mod support;

use std::process::Command;

use support::garage::{BUCKET, Garage};
use support::share::keygen;
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
