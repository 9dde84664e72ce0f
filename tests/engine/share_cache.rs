//! Sharing entries through a cache folder (`file://`): `bottle key generate`, `bottle push`
//! (signed, only what the cache lacks), `bottle pull` (only a trusted signature, every byte
//! checked, only what this machine lacks; resumed after SIGKILL), substitution in `build` and
//! `run`, `build --push`, `gc --remote`. What a pull refuses is in `share_refusals.rs`. The
//! real binary against the real Docker Engine; the round trips run the pulled entry.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::share::*;
use support::*;

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
/// The route's token value, new for each test process.
fn token() -> String {
    let seed = format!("{}-{:?}", std::process::id(), std::time::SystemTime::now());
    format!("tok-{}", &blake3::hash(seed.as_bytes()).to_hex()[..20])
}

#[test]
fn an_entry_pushed_to_a_folder_cache_is_pulled_into_an_empty_store_verified_and_run() {
    let token = token();
    let src = TestContext::new("share-src");
    src.write_recipe("r.toml", &recipe("share-src", ROUTE));
    let dst = TestContext::new("share-dst");
    let hash = src.build(&src.recipe());
    // A run of the source store is live while it pushes: it holds CA keys and the token.
    let mut c = src.cmd();
    c.env("BOTTLE_TEST_SHARE_TOKEN", &token);
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
    let mut secrets = vec![token.clone()];
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
        !dst.store().local().join("pull").exists(),
        "what the pull put together stayed"
    );
    // Pulled again: nothing to do.
    let out = pull(&dst, &hash, &cache, &public);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["present"], true);
    // It runs here, with CAs minted here.
    let mut c = dst.cmd();
    c.env("BOTTLE_TEST_SHARE_TOKEN", &token);
    let out = dst.output_of(
        c,
        &["run", &hash, "--", "sh", "-c", "echo ran as $(id -un)"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ran as node");
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

/// Of the components of entry `m` that `store` lacks: their bytes, and how many of them a
/// pull resumes from — what killed pulls put together under `local/pull/`, up to each file's
/// last whole chunk (from the cache's chunk lists).
fn resumable(
    cache: &Path,
    m: &bottle::manifest::Manifest,
    store: &bottle::store::Store,
) -> (u64, u64) {
    let (mut total, mut resumed) = (0, 0);
    for id in m.components.ids() {
        if store.has_component(&id) {
            continue;
        }
        let list: serde_json::Value = serde_json::from_slice(
            &std::fs::read(cache.join(bottle::share::chunk_list_key(&id))).unwrap(),
        )
        .unwrap();
        let dir = bottle::share::local::pull_dir(store, &id);
        for f in list["files"].as_array().unwrap() {
            let len = std::fs::metadata(dir.join(f["path"].as_str().unwrap()))
                .map(|m| m.len())
                .unwrap_or(0);
            let mut at = 0;
            for c in f["chunks"].as_array().unwrap() {
                let size = c["size"].as_u64().unwrap();
                total += size;
                if at + size <= len {
                    resumed += size;
                }
                at += size;
            }
        }
    }
    (total, resumed)
}

/// The bytes put together so far under a store's `local/pull/` for the entry's components.
fn pulled_bytes(m: &bottle::manifest::Manifest, store: &bottle::store::Store) -> u64 {
    m.components
        .ids()
        .iter()
        .map(|id| {
            walkdir::WalkDir::new(bottle::share::local::pull_dir(store, id))
                .into_iter()
                .filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .filter(|md| md.is_file())
                .map(|md| md.len())
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn a_pull_killed_at_random_points_resumes_and_moves_only_what_is_missing() {
    let src = TestContext::new("share-kill-src");
    let dst = TestContext::new("share-kill-dst");
    let hash = src.build(&src.recipe());
    let m = src.manifest(&hash);
    let (key, public) = keygen(&src, "ci-1");
    let cache = src.dir.path().join("cache");
    push(&src, &hash, &cache, &key);
    // The window to aim at: how long a pull here spends putting files together, from its
    // first byte on disk to its last, measured on a pull into a store of its own.
    let probe = src.dir.path().join("probe");
    let mut c = src.cmd();
    c.env("BOTTLE_STORE", &probe)
        .args(["pull", &hash, "--from", &url(&cache), "--trust", &public])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let probe_store = bottle::store::Store::new(probe.clone());
    let mut child = c.spawn().unwrap();
    let (mut first, mut last, mut seen) = (None, std::time::Instant::now(), 0);
    while child.try_wait().unwrap().is_none() {
        let now = pulled_bytes(&m, &probe_store);
        if now > seen {
            first.get_or_insert_with(std::time::Instant::now);
            (last, seen) = (std::time::Instant::now(), now);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(child.wait().unwrap().success(), "the probe pull failed");
    let first = first.expect("the probe pull put no file together under local/pull");
    let window = (last - first).as_millis().max(2) as u64;
    // Random points: a seed from the clock, printed with any failure.
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut delays = Vec::new();
    // Kills that landed mid-transfer: the killed pull left more whole chunks to resume from
    // than there were before it, and no entry.
    let mut mid_transfer = 0;
    let mut resumed_before = 0;
    for _ in 0..8 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // A random point between an eighth and a half of what is left of the window,
        // counted from this pull's first new byte on disk. Each pull resumes the last, so
        // the window shrinks with what is left to move; a kill drawn from all of it could
        // take nearly everything at once and leave the other kills nothing to land in.
        let (total, resumed) = resumable(&cache, &m, &dst.store());
        let left = window * total.saturating_sub(resumed) / total.max(1);
        let ms = left / 8 + x % (left * 3 / 8).max(1);
        delays.push(ms);
        let before = pulled_bytes(&m, &dst.store());
        let mut c = dst.cmd();
        c.args(["pull", &hash, "--from", &url(&cache), "--trust", &public]);
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while pulled_bytes(&m, &dst.store()) <= before
            && child.try_wait().unwrap().is_none()
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(ms));
        let _ = child.kill();
        let _ = child.wait();
        let (_, resumed) = resumable(&cache, &m, &dst.store());
        if resumed > resumed_before && !dst.entry_file(&hash).exists() {
            mid_transfer += 1;
        }
        resumed_before = resumed;
    }
    dst.scan_store();
    // The window this test claims: kills landed while a pull was moving chunks.
    assert!(
        mid_transfer >= 2,
        "only {mid_transfer} of 8 kills (at {delays:?} ms after their first byte; a pull puts files together for {window} ms) landed mid-transfer"
    );
    let partial = dst.store().local().join("pull");
    let (missing, resumed) = resumable(&cache, &m, &dst.store());
    let out = pull(&dst, &hash, &cache, &public);
    assert!(
        out.status.success(),
        "after kills at {delays:?} ms: {}",
        stderr(&out)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if r["present"] == true {
        // A killed pull got as far as publishing the entry.
        assert_eq!(missing, 0, "{delays:?}");
    } else {
        // What the killed pulls put together is used: some of it is resumed, not fetched again.
        assert!(
            resumed > 0,
            "kills at {delays:?} ms left nothing to resume: {r}"
        );
        assert_eq!(
            r["bytes_resumed"].as_u64().unwrap(),
            resumed,
            "{delays:?}: {r}"
        );
        assert_eq!(
            r["bytes_downloaded"].as_u64().unwrap(),
            missing - resumed,
            "kills at {delays:?} ms: only what was missing is downloaded: {r}"
        );
    }
    assert_eq!(
        dst.ok(&["verify"]).trim(),
        format!("ok       {hash}"),
        "{delays:?}"
    );
    assert!(!partial.exists(), "what the pulls put together stayed");
    // gc removes what a killed pull leaves there.
    std::fs::create_dir_all(partial.join("guest-left/x")).unwrap();
    dst.ok(&["gc", "--keep", &hash]);
    assert!(!partial.exists());
    eprintln!(
        "a pull puts files together for {window} ms; kills at {delays:?} ms after their first byte, {mid_transfer} mid-transfer; {resumed} of {missing} bytes were resumed by the last pull (present: {})",
        r["present"]
    );
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

#[test]
fn ci_builds_and_pushes_in_one_command_and_an_empty_store_runs_the_hash_through_its_substituters() {
    let ci = TestContext::new("share-ci");
    let laptop = TestContext::new("share-laptop");
    let (key, public) = keygen(&ci, "ci-1");
    let cache = ci.dir.path().join("cache");
    // CI's one command: build, then push signed with BOTTLE_SECRET_KEY_FILE.
    let mut c = ci.cmd();
    c.env("BOTTLE_SECRET_KEY_FILE", &key);
    let recipe = ci.recipe();
    let out = ci.output_of(
        c,
        &["build", "--push", &url(&cache), recipe.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = stdout(&out).lines().last().unwrap().trim().to_string();
    assert!(
        stderr(&out).contains("bottle push: 3 of 3 components"),
        "{}",
        stderr(&out)
    );
    assert!(
        cache
            .join(bottle::share::signature_key(&build_hash(&hash)))
            .is_file()
    );

    // A laptop with the cache and CI's key in its config file: `bottle run HASH` pulls,
    // verifies and runs.
    let config = laptop.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "substituters = [\"{}\"]\ntrusted-public-keys = [\"{public}\"]\n",
            url(&cache)
        ),
    )
    .unwrap();
    let mut c = laptop.cmd();
    c.env("BOTTLE_CONFIG", &config);
    let out = laptop.output_of(
        c,
        &["run", &hash, "--", "sh", "-c", "echo ran as $(id -un)"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ran as node");
    assert!(
        stderr(&out).contains(&format!("pulled {}", &hash[..12])),
        "{}",
        stderr(&out)
    );
    assert_eq!(laptop.ok(&["verify"]).trim(), format!("ok       {hash}"));

    // `bottle build` of the same recipe elsewhere substitutes instead of building (here from
    // the environment, as CI sets it).
    let other = TestContext::new("share-other");
    let mut c = other.cmd();
    c.env("BOTTLE_SUBSTITUTERS", url(&cache))
        .env("BOTTLE_TRUSTED_PUBLIC_KEYS", &public)
        .env("DOCKER_HOST", "unix:///nonexistent.sock");
    let out = other.output_of(c, &["build", "--json", recipe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["hash"], hash.as_str());
    assert_eq!(r["cached"], true, "nothing was built: {r}");

    // A substituter whose entry no trusted key signed: refused, named, and the run fails.
    let fourth = TestContext::new("share-untrusting");
    let (_, stranger) = keygen(&fourth, "someone-else");
    let mut c = fourth.cmd();
    c.env("BOTTLE_SUBSTITUTERS", url(&cache))
        .env("BOTTLE_TRUSTED_PUBLIC_KEYS", &stranger);
    let out = fourth.output_of(c, &["run", &hash, "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("substituter {}", url(&cache))),
        "{err}"
    );
    assert!(err.contains("signed by ci-1 and no trusted key"), "{err}");
    assert!(fourth.store().hashes().unwrap().is_empty());
    for ctx in [&ci, &laptop, &other, &fourth] {
        ctx.assert_nothing_left();
    }
}

#[test]
fn gc_remote_removes_what_no_kept_entry_names_and_waits_for_pushes() {
    let src = TestContext::new("share-gc-src");
    let dst = TestContext::new("share-gc-dst");
    let a = src.build(&src.recipe());
    let other = src.write_recipe(
        "other.toml",
        &recipe("share-gc-src", "").replace("\"example.com\"", "\"example.org\""),
    );
    let b = src.build(&other);
    let (key, public) = keygen(&src, "ci-1");
    let cache = src.dir.path().join("cache");
    push(&src, &a, &cache, &key);
    push(&src, &b, &cache, &key);
    let gc = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["gc", "--json", "--remote"];
        let u = url(&cache);
        all.push(&u);
        all.extend(args);
        serde_json::from_str(&src.ok(&all)).unwrap()
    };
    let before = files(&cache);
    let r = gc(&[]);
    assert_eq!(
        (
            r["removed_components"].as_u64(),
            r["removed_chunks"].as_u64()
        ),
        (Some(0), Some(0)),
        "{r}"
    );
    assert_eq!(r["kept"].as_array().unwrap().len(), 2);
    assert_eq!(
        files(&cache),
        before,
        "a gc keeping every entry removed something"
    );

    // What a killed push left: a chunk and a component no entry names.
    let orphan = bottle::digest::Digest::of(b"orphan");
    std::fs::create_dir_all(
        cache
            .join(bottle::share::chunk_key(&orphan))
            .parent()
            .unwrap(),
    )
    .unwrap();
    std::fs::write(cache.join(bottle::share::chunk_key(&orphan)), b"orphan").unwrap();
    let stray = cache.join("v1/components/config").join("a".repeat(64));
    std::fs::create_dir_all(&stray).unwrap();
    std::fs::write(stray.join("chunks.json"), "{}").unwrap();
    // A push under way: gc refuses, and changes nothing.
    let lease = cache.join("v1/locks/push-test");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(&lease, now.to_string()).unwrap();
    let out = src.output(&["gc", "--remote", &url(&cache)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a push is under way"),
        "{}",
        stderr(&out)
    );
    assert!(cache.join(bottle::share::chunk_key(&orphan)).exists());
    // One a killed push left long ago is ignored.
    std::fs::write(&lease, "0").unwrap();
    let r = gc(&[]);
    assert_eq!(
        (
            r["removed_components"].as_u64(),
            r["removed_chunks"].as_u64()
        ),
        (Some(1), Some(1)),
        "{r}"
    );
    assert!(!cache.join(bottle::share::chunk_key(&orphan)).exists());

    // Keep only A: B's entry and its config go, with the chunks only that config lists.
    let r = gc(&["--keep", &a]);
    assert_eq!(r["removed_entries"], serde_json::json!([b]));
    assert_eq!(r["removed_components"], 1, "{r}");
    assert!(r["removed_chunks"].as_u64().unwrap() >= 1, "{r}");
    let out = pull(&dst, &a, &cache, &public);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {a}"));
    let out = pull(&dst, &b, &cache, &public);
    assert!(
        stderr(&out).contains("is not in the cache"),
        "{}",
        stderr(&out)
    );

    // A gc under way: a push refuses to start.
    std::fs::write(cache.join("v1/locks/gc"), now.to_string()).unwrap();
    let out = src.output(&["push", &b, "--to", &url(&cache)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("gc --remote` is under way"),
        "{}",
        stderr(&out)
    );
    dst.assert_nothing_left();
    src.assert_nothing_left();
}
