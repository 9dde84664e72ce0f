//! Sharing entries through a real HTTP server: Debian's nginx with WebDAV's PUT and DELETE
//! and a JSON autoindex, started by the test on a loopback port with its own prefix, and
//! stopped (and its folder removed) when the test ends, also on failure.

use crate::support;

use support::nginx::Nginx;
use support::ports::free_port;
use support::share::keygen;
use support::*;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap()
}

#[test]
fn an_entry_pushed_to_nginx_is_pulled_into_an_empty_store_and_runs() {
    let nginx = Nginx::start();
    let src = TestContext::new("share-http-src");
    let dst = TestContext::new("share-http-dst");
    let hash = src.build(&src.recipe());
    let (key, public) = keygen(&src, "ci-1");
    let url = nginx.url("team/cache");
    let push = |ctx: &TestContext| {
        json(&ctx.ok(&[
            "push",
            &hash,
            "--json",
            "--to",
            &url,
            "--sign-key",
            key.to_str().unwrap(),
        ]))
    };
    let first = push(&src);
    assert_eq!(first["components"].as_array().unwrap().len(), 3, "{first}");
    let uploaded = first["bytes_uploaded"].as_u64().unwrap();
    assert!(uploaded > 0);
    // The objects are on nginx's disk, under the URL's prefix.
    let on_disk = bytes_under(&nginx.root().join("team/cache"));
    assert_eq!(
        on_disk,
        uploaded + bytes_under(&nginx.root().join("team/cache/v1/entries"))
    );
    assert_eq!(
        push(&src)["chunks_uploaded"],
        0,
        "a second push uploads nothing"
    );

    let out = dst.ok(&["pull", &hash, "--json", "--from", &url, "--trust", &public]);
    let r = json(&out);
    assert_eq!(r["components"].as_array().unwrap().len(), 3, "{r}");
    assert_eq!(r["signed_by"], "ci-1");
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    let out = dst.output(&["run", &hash, "--", "sh", "-c", "echo ran as $(id -un)"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ran as node");

    // gc over HTTP: lists through nginx's JSON autoindex, removes with DELETE.
    let orphan = nginx
        .root()
        .join("team/cache/v1/chunks/00")
        .join("0".repeat(64));
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    let r = json(&src.ok(&["gc", "--json", "--remote", &url]));
    assert_eq!(r["kept"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["removed_chunks"], 1, "{r}");
    assert!(!orphan.exists());
    assert_eq!(
        push(&src)["chunks_uploaded"],
        0,
        "gc kept every chunk the entry needs"
    );

    // A chunk flipped on the server's disk: refused, naming the file and the chunk; the
    // store it was pulled into is unchanged.
    let m = src.manifest(&hash);
    let guest = m.components.get(bottle::hash::ComponentKind::Guest);
    let list: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            nginx
                .root()
                .join("team/cache")
                .join(bottle::share::chunk_list_key(&guest)),
        )
        .unwrap(),
    )
    .unwrap();
    let first = list["files"][0]["chunks"][0]["blake3"].as_str().unwrap();
    let chunk = nginx
        .root()
        .join("team/cache")
        .join(bottle::share::chunk_key(
            &bottle::digest::Digest::parse(first).unwrap(),
        ));
    let mut b = std::fs::read(&chunk).unwrap();
    b[0] ^= 1;
    std::fs::write(&chunk, b).unwrap();
    let fourth = TestContext::new("share-http-flipped");
    fourth.build(&fourth.recipe());
    let before = fourth.snapshot();
    let out = fourth.output(&["pull", &hash, "--from", &url, "--trust", &public]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("refused entry {hash} from {url}")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "guest/{}: chunk {}",
            list["files"][0]["path"].as_str().unwrap(),
            &first[..12]
        )),
        "{err}"
    );
    assert_eq!(fourth.snapshot(), before, "the store changed");
    fourth.assert_nothing_left();

    // A server that is gone: a clear error naming the URL, after retries, the store unchanged.
    let gone = format!("http://127.0.0.1:{}/x", free_port());
    let third = TestContext::new("share-http-gone");
    let out = third.output(&["pull", &hash, "--from", &gone, "--trust", &public]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&gone), "{}", stderr(&out));
    assert!(!third.store.exists());
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

#[test]
fn an_https_cache_behind_a_private_ca_serves_a_pull_once_its_ca_is_named() {
    let (nginx, ca) = Nginx::start_tls();
    let src = TestContext::new("share-https-src");
    let dst = TestContext::new("share-https-dst");
    let hash = src.build(&src.recipe());
    let (key, public) = keygen(&src, "ci-1");
    let url = nginx.url("cache");
    assert!(url.starts_with("https://"), "{url}");
    let mut c = src.cmd();
    c.env(bottle::share::tls::CA_ENV, &ca);
    let out = src.output_of(
        c,
        &[
            "push",
            &hash,
            "--to",
            &url,
            "--sign-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // Without the CA: the certificate is refused, naming the cache; nothing is pulled.
    let out = dst.output(&["pull", &hash, "--from", &url, "--trust", &public]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&url), "{}", stderr(&out));
    assert!(
        stderr(&out).to_lowercase().contains("certificate"),
        "{}",
        stderr(&out)
    );
    // Said at the first refusal: a refused certificate is not tried again.
    assert!(!stderr(&out).contains("gave up after"), "{}", stderr(&out));
    assert!(!dst.store.exists());
    let mut c = dst.cmd();
    c.env(bottle::share::tls::CA_ENV, &ca);
    let out = dst.output_of(c, &["pull", &hash, "--from", &url, "--trust", &public]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dst.ok(&["verify"]).trim(), format!("ok       {hash}"));
    dst.assert_nothing_left();
    src.assert_nothing_left();
}
