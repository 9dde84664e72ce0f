//! What a pull from a cache refuses, naming what and where, leaving the store as it was: a
//! flipped, truncated or missing chunk, an unsigned entry, one signed by an untrusted key,
//! chunks out of order (a chunk list whose digests do not make the record's file), a swapped
//! component, a record edited after signing, an edited manifest. The real binary, a folder
//! cache (`file://`) pushed to by the real binary, the real Docker Engine for the builds.

use crate::support;

use std::path::{Path, PathBuf};

use support::share::*;
use support::*;

/// The guest's chunk list of an entry in a cache folder: (list path, its JSON).
fn guest_chunks(cache: &Path, m: &bottle::manifest::Manifest) -> (PathBuf, serde_json::Value) {
    let id = m.components.get(bottle::hash::ComponentKind::Guest);
    let path = cache.join(bottle::share::chunk_list_key(&id));
    let v = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (path, v)
}

fn copy_tree(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_pull_refuses_what_was_changed_in_the_cache_naming_it_and_changes_nothing() {
    let src = TestContext::new("share-bad-src");
    let dst = TestContext::new("share-bad-dst");
    let hash = src.build(&src.recipe());
    let h = build_hash(&hash);
    let m = src.manifest(&hash);
    // Another entry of the same recipe with another config, to swap components with.
    let other = src.write_recipe(
        "other.toml",
        &recipe("share-bad-src", "").replace("\"example.com\"", "\"example.org\""),
    );
    let other_hash = src.build(&other);
    let om = src.manifest(&other_hash);
    let (key, public) = keygen(&src, "ci-1");
    let (evil, _) = keygen(&src, "evil");
    let cache = src.dir.path().join("cache");
    push(&src, &hash, &cache, &key);
    push(&src, &other_hash, &cache, &key);
    dst.build(&dst.recipe());
    let (list_path, list) = guest_chunks(&cache, &m);
    let image = &list["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "image.tar")
        .unwrap()["chunks"];
    assert!(image.as_array().unwrap().len() >= 2, "{image}");
    let first = bottle::digest::Digest::parse(image[0]["blake3"].as_str().unwrap()).unwrap();
    let chunk = bottle::share::chunk_key(&first);
    let sig = bottle::share::signature_key(&h);
    let config = |m: &bottle::manifest::Manifest| {
        bottle::share::record_key(&m.components.get(bottle::hash::ComponentKind::Config))
    };
    // The chunk is named, and refused as itself, before the file it belongs to.
    let flipped = format!(
        "guest/image.tar: chunk {} ({chunk}): its bytes hash to",
        first.short()
    );
    type Damage<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: Vec<(&str, &str, Damage)> = vec![
        (
            "flipped byte",
            &flipped,
            Box::new(|c: &Path| flip(&c.join(&chunk))),
        ),
        (
            "truncated chunk",
            "bytes where the chunk list says",
            Box::new(|c: &Path| {
                let p = c.join(&chunk);
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            }),
        ),
        (
            "missing chunk",
            "missing from the cache",
            Box::new(|c: &Path| std::fs::remove_file(c.join(&chunk)).unwrap()),
        ),
        (
            "unsigned",
            "signature: it is not signed",
            Box::new(|c: &Path| std::fs::remove_file(c.join(&sig)).unwrap()),
        ),
        (
            "untrusted key",
            "signed by evil and no trusted key",
            Box::new(|c: &Path| {
                std::fs::remove_file(c.join(&sig)).unwrap();
                push(&src, &hash, c, &evil);
            }),
        ),
        (
            "chunks out of order",
            "guest/image.tar: its chunks put together hash to",
            Box::new(|c: &Path| {
                let mut l = list.clone();
                let f = l["files"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .find(|f| f["path"] == "image.tar")
                    .unwrap();
                f["chunks"].as_array_mut().unwrap().swap(0, 1);
                let rel = list_path.strip_prefix(&cache).unwrap();
                std::fs::write(c.join(rel), serde_json::to_vec(&l).unwrap()).unwrap();
            }),
        ),
        (
            "component swapped",
            "config record",
            Box::new(|c: &Path| {
                std::fs::copy(c.join(config(&om)), c.join(config(&m))).unwrap();
            }),
        ),
        (
            "record edited after signing",
            "does not match",
            Box::new(|c: &Path| {
                let p = c.join(config(&m));
                let text = std::fs::read_to_string(&p).unwrap();
                assert!(text.contains("\"mode\": 420"), "{text}");
                std::fs::write(&p, text.replacen("\"mode\": 420", "\"mode\": 438", 1)).unwrap();
            }),
        ),
        (
            "manifest edited",
            "manifest: it hashes to",
            Box::new(|c: &Path| {
                let p = c.join(bottle::share::entry_key(&h));
                let text = std::fs::read_to_string(&p).unwrap();
                std::fs::write(&p, text.replace("share-bad-src", "share-bad-srd")).unwrap();
            }),
        ),
    ];
    let before = dst.snapshot();
    for (i, (case, says, damage)) in cases.iter().enumerate() {
        let copy = src.dir.path().join(format!("copy-{i}"));
        copy_tree(&cache, &copy);
        damage(&copy);
        let out = pull(&dst, &hash, &copy, &public);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{case}: {err}");
        assert!(
            err.contains(&format!("refused entry {hash}")),
            "{case}: {err}"
        );
        assert!(err.contains(says), "{case}: {err}");
        assert!(
            err.contains(&url(&copy)),
            "{case}: the cache is not named: {err}"
        );
        assert_eq!(dst.snapshot(), before, "{case}: the store changed");
        std::fs::remove_dir_all(&copy).unwrap();
    }
    // The undamaged cache still serves it; and --no-check-sigs accepts it unsigned.
    let out = pull(&dst, &hash, &cache, &public);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dst.output(&["verify", &hash]).status.success());
    std::fs::remove_file(cache.join(bottle::share::signature_key(&build_hash(&other_hash))))
        .unwrap();
    let out = dst.output(&[
        "pull",
        &other_hash,
        "--from",
        &url(&cache),
        "--no-check-sigs",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    dst.assert_nothing_left();
    src.assert_nothing_left();
}

fn flip(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x01;
    std::fs::write(path, b).unwrap();
}
