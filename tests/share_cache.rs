//! Sharing entries through a cache folder (`file://`): `bottle key generate`, `bottle push`
//! (signed, only what the cache lacks), `bottle pull` (only a trusted signature, every byte
//! checked, only what this machine lacks) and what a pull refuses, leaving the store as it
//! was. The real binary against the real Docker Engine; the round trip runs the pulled entry.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

/// `bottle key generate NAME --out DIR`: (secret key file, public key line).
fn keygen(ctx: &TestContext, name: &str) -> (PathBuf, String) {
    let dir = ctx.dir.path().join("keys");
    let out = ctx.ok(&["key", "generate", name, "--out", dir.to_str().unwrap()]);
    (dir.join(format!("{name}.sec")), out.trim().to_string())
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

fn push(ctx: &TestContext, hash: &str, cache: &Path, key: &Path) -> serde_json::Value {
    let out = ctx.ok(&[
        "push",
        hash,
        "--json",
        "--to",
        &url(cache),
        "--sign-key",
        key.to_str().unwrap(),
    ]);
    serde_json::from_str(&out).unwrap()
}

fn pull(ctx: &TestContext, hash: &str, cache: &Path, trust: &str) -> std::process::Output {
    ctx.output(&[
        "pull",
        hash,
        "--json",
        "--from",
        &url(cache),
        "--trust",
        trust,
    ])
}

/// Every file under a folder, by relative path.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    snapshot(root)
        .into_iter()
        .filter(|(p, _)| !p.ends_with('/'))
        .collect()
}

#[test]
fn key_generate_writes_a_nix_style_pair_and_never_overwrites_it() {
    let ctx = TestContext::new("share-keygen");
    let (sec, public) = keygen(&ctx, "ci-1");
    let mode = std::fs::metadata(&sec).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let pub_file = std::fs::read_to_string(sec.with_extension("pub")).unwrap();
    assert_eq!(pub_file.trim(), public, "the printed line is the .pub file");
    assert!(
        public.starts_with("ci-1:") && public.len() == 5 + 44,
        "{public}"
    );
    let sec_line = std::fs::read_to_string(&sec).unwrap();
    assert!(
        sec_line.starts_with("ci-1:") && sec_line.trim().len() == 5 + 88,
        "{sec_line}"
    );
    let again = ctx.output(&[
        "key",
        "generate",
        "ci-1",
        "--out",
        sec.parent().unwrap().to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("exists"), "{}", stderr(&again));
    assert_eq!(std::fs::read_to_string(&sec).unwrap(), sec_line);
    let bad = ctx.output(&["key", "generate", "a:b"]);
    assert_eq!(bad.status.code(), Some(1));
}

/// A recipe with an egress route, so a run holds a token value and a CA key: neither may
/// reach the cache.
const ROUTE: &str = r#"
[[egress.routes]]
host = "api.example.com"
token_env = "BOTTLE_TEST_SHARE_TOKEN"
"#;
const TOKEN: &str = "tok-3f9c1d7e0a5b4c2d8e6f";

#[test]
fn an_entry_pushed_to_a_folder_cache_is_pulled_into_an_empty_store_verified_and_run() {
    let src = TestContext::new("share-src");
    src.write_recipe("r.toml", &recipe("share-src", ROUTE));
    let dst = TestContext::new("share-dst");
    let hash = src.build(&src.recipe());
    // A run of the source store is live while it pushes: it holds CA keys and the token.
    let mut c = src.cmd();
    c.env("BOTTLE_TEST_SHARE_TOKEN", TOKEN);
    let child = Spawned::start(
        c,
        &[
            "run",
            &hash,
            "--",
            "sh",
            "-c",
            "while [ ! -f /tmp/go ]; do sleep 0.1; done",
        ],
    );
    let run_id = src.wait_live().0;
    let ca = src.store().runs().join(&run_id).join("ca");
    let mut secrets = vec![TOKEN.to_string()];
    for (path, bytes) in files(&ca) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if text.contains("PRIVATE KEY") {
            // The key's base64 body, without the PEM armour (which any TLS binary holds).
            let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(body.len() > 40, "{path}");
            secrets.push(body.chars().take(64).collect());
        }
    }
    assert!(secrets.len() >= 2, "the run's CA has a key: {secrets:?}");
    let (key, public) = keygen(&src, "ci-1");
    let cache = src.dir.path().join("cache");
    let first = push(&src, &hash, &cache, &key);
    assert_eq!(first["components"].as_array().unwrap().len(), 3, "{first}");
    assert!(first["chunks_uploaded"].as_u64().unwrap() > 0);
    assert_eq!(first["signed_by"], "ci-1");
    let objects = files(&cache);
    assert!(objects.len() > 8, "{}", objects.len());
    for (path, bytes) in &objects {
        let text = String::from_utf8_lossy(bytes);
        for s in &secrets {
            assert!(
                !text.contains(s.as_str()),
                "{path} holds a secret of the run"
            );
        }
    }
    loop {
        if src
            .output(&["exec", &run_id, "--", "touch", "/tmp/go"])
            .status
            .success()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, err) = child.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{err}");
    // A second push uploads nothing.
    let again = push(&src, &hash, &cache, &key);
    assert_eq!(again["components"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["chunks_uploaded"], 0);

    assert!(!dst.store.exists());
    let out = pull(&dst, &hash, &cache, &public);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["components"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["signed_by"], "ci-1");
    assert_eq!(
        std::fs::read(dst.entry_file(&hash)).unwrap(),
        std::fs::read(src.entry_file(&hash)).unwrap()
    );
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    assert!(
        !bottle::share::local::partial_dir(&dst.store()).exists(),
        "downloaded chunks stayed"
    );
    // Pulled again: nothing to do.
    let out = pull(&dst, &hash, &cache, &public);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["present"], true);
    // It runs here, with CAs minted here.
    let mut c = dst.cmd();
    c.env("BOTTLE_TEST_SHARE_TOKEN", TOKEN);
    let out = dst.output_of(
        c,
        &["run", &hash, "--", "sh", "-c", "echo ran as $(id -un)"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ran as node");
    dst.assert_nothing_left();
    src.assert_nothing_left();
}
