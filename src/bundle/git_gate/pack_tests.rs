//! Packs made by Debian's real git (`git pack-objects`), whole, with `ofs-delta`s and with
//! `ref-delta`s, and damaged ones.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use super::*;

struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn new() -> Repo {
        let r = Repo {
            dir: tempfile::tempdir().unwrap(),
        };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }

    fn git(&self, args: &[&str]) -> String {
        self.git_in(args, None)
    }

    fn git_in(&self, args: &[&str], input: Option<&str>) -> String {
        let mut child = Command::new("/usr/bin/git")
            .args(["-c", "user.name=T", "-c", "user.email=t@t.invalid"])
            .args(args)
            .current_dir(self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("/usr/bin/git (scripts/setup installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.unwrap_or("").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A commit changing `file` to `text`, with a long message much like the others (so that
    /// pack-objects deltifies commits too); returns its id.
    fn commit(&self, file: &str, text: &str, n: usize) -> Oid {
        std::fs::write(self.dir.path().join(file), text).unwrap();
        self.git(&["add", file]);
        let body = "a line of a long commit message that repeats\n".repeat(80);
        let msg = format!("commit {n}\n\n{body}");
        self.git(&["commit", "-q", "-m", &msg]);
        Oid::parse_hex(&self.git(&["rev-parse", "HEAD"])).unwrap()
    }

    /// `git pack-objects --revs` of `revs` (`X`, `^Y` lines).
    fn pack(&self, revs: &str, ofs: bool) -> Vec<u8> {
        let mut args = vec!["pack-objects", "--stdout", "--revs", "-q", "--window=50"];
        if ofs {
            args.push("--delta-base-offset");
        }
        let out = Command::new("/usr/bin/git")
            .args(&args)
            .current_dir(self.dir.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(revs.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        out.stdout
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Ten commits on main whose file grows a little each time.
fn history(r: &Repo) -> Vec<Oid> {
    let mut text = String::new();
    (0..10)
        .map(|i| {
            text.push_str(&format!(
                "line {i} of a file that grows {}\n",
                "x".repeat(200)
            ));
            r.commit("f.txt", &text, i)
        })
        .collect()
}

fn count_deltas(pack: &[u8]) -> (usize, usize) {
    let mut out = std::process::Command::new("/usr/bin/git");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.pack");
    std::fs::write(&file, pack).unwrap();
    out.args(["index-pack", file.to_str().unwrap()]);
    assert!(out.output().unwrap().status.success());
    let v = std::process::Command::new("/usr/bin/git")
        .args([
            "verify-pack",
            "-v",
            dir.path().join("p.idx").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout).into_owned();
    let commit_deltas = text
        .lines()
        .filter(|l| l.contains(" commit ") && l.split_whitespace().count() >= 7)
        .count();
    let all_deltas = text
        .lines()
        .filter(|l| l.split_whitespace().count() >= 7 && l.len() > 40)
        .count();
    (commit_deltas, all_deltas)
}

#[test]
fn fast_forwards_are_found_with_ofs_and_ref_deltas() {
    let r = Repo::new();
    let c = history(&r);
    for ofs in [true, false] {
        let bytes = r.pack(&format!("{}\n^{}\n", c[9], c[0]), ofs);
        let (commit_deltas, deltas) = count_deltas(&bytes);
        assert!(
            commit_deltas > 0,
            "git deltified no commit: the test shows nothing"
        );
        assert!(deltas > commit_deltas);
        let pack = Pack::parse(&bytes).unwrap();
        assert_eq!(pack.commits.len(), 9, "ofs={ofs}");
        assert_eq!(pack.descends(c[9], c[0]), Ancestry::FastForward);
        assert_eq!(pack.descends(c[9], c[5]), Ancestry::FastForward);
        assert_eq!(pack.descends(c[9], c[9]), Ancestry::FastForward);
        // Backwards: c[5] is in the pack, c[9] is not its ancestor.
        assert_eq!(pack.descends(c[5], c[9]), Ancestry::NotProven);
        assert_eq!(pack.descends(c[0], c[9]), Ancestry::NewNotInPack);
        for (id, commit) in &pack.commits {
            let parent = r.git(&["rev-parse", &format!("{id}^")]);
            assert_eq!(commit.parents, [Oid::parse_hex(&parent).unwrap()]);
        }
    }
}

#[test]
fn a_rewritten_branch_is_not_a_fast_forward() {
    let r = Repo::new();
    let c = history(&r);
    r.git(&["reset", "-q", "--hard", &c[4].to_string()]);
    let other = r.commit("g.txt", "another way\n", 99);
    // What `git push --force` sends: the new commits the upstream (at c[9]) lacks.
    let bytes = r.pack(&format!("{other}\n^{}\n", c[9]), true);
    let pack = Pack::parse(&bytes).unwrap();
    assert_eq!(pack.commits.len(), 1);
    assert_eq!(pack.descends(other, c[9]), Ancestry::NotProven);
    // A merge of both sides is a fast-forward from either.
    r.git(&["merge", "-q", "--no-edit", &c[9].to_string()]);
    let merge = Oid::parse_hex(&r.git(&["rev-parse", "HEAD"])).unwrap();
    let pack = Pack::parse(&r.pack(&format!("{merge}\n^{}\n", c[9]), true)).unwrap();
    assert_eq!(pack.commits[&merge].parents.len(), 2);
    assert_eq!(pack.descends(merge, c[9]), Ancestry::FastForward);
    assert!(r.path().exists());
}

#[test]
fn damaged_packs_are_errors_never_panics() {
    let r = Repo::new();
    let c = history(&r);
    let good = r.pack(&format!("{}\n", c[9]), true);
    assert!(Pack::parse(&good).is_ok());
    assert_eq!(Pack::parse(&good[..10]).unwrap_err(), PackError::Short(10));
    let mut bad = good.clone();
    bad[40] ^= 0xff;
    assert_eq!(Pack::parse(&bad).unwrap_err(), PackError::Checksum);
    let mut truncated = good[..good.len() - 100].to_vec();
    assert_eq!(Pack::parse(&truncated).unwrap_err(), PackError::Checksum);
    // Damage with a matching checksum: every byte flipped in turn (a stride), none panics.
    let reseal = |mut d: Vec<u8>| {
        let end = d.len() - 20;
        let sum = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &d[..end]);
        d[end..].copy_from_slice(sum.as_ref());
        d
    };
    let mut failures = 0;
    for i in (0..good.len() - 20).step_by(7) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut d = good.clone();
            d[i] ^= flip;
            if Pack::parse(&reseal(d)).is_err() {
                failures += 1;
            }
        }
    }
    assert!(failures > 0);
    truncated.truncate(good.len() / 2);
    let e = Pack::parse(&reseal(truncated)).unwrap_err().to_string();
    assert!(e.contains("object") || e.contains("follow"), "{e}");
    let v9: Vec<u8> = b"PACK\0\0\0\x09\0\0\0\0"
        .iter()
        .copied()
        .chain([0; 20])
        .collect();
    assert_eq!(Pack::parse(&reseal(v9)).unwrap_err(), PackError::Version(9));
}

#[test]
fn deltas_copy_and_insert() {
    let base = b"hello, world";
    // src 12, dst 11: copy 7 bytes from 0, insert "there".
    let delta = [12u8, 12, 0x90, 7, 5, b't', b'h', b'e', b'r', b'e'];
    assert_eq!(
        apply_delta(base, &delta[..], 1 << 20).unwrap(),
        b"hello, there"
    );
    assert!(
        apply_delta(base, &[11, 1, 1, b'x'], 1 << 20)
            .unwrap_err()
            .contains("base of 11")
    );
    assert!(
        apply_delta(base, &[12, 5, 0x90, 50], 1 << 20)
            .unwrap_err()
            .contains("outside")
    );
    assert!(
        apply_delta(base, &[12, 1, 0], 1 << 20)
            .unwrap_err()
            .contains("reserved")
    );
    assert!(
        apply_delta(base, &[12, 1, 5, b'x'], 1 << 20)
            .unwrap_err()
            .contains("truncated")
    );
}

#[test]
fn a_delta_declaring_more_than_the_budget_is_refused_before_allocating() {
    let base = b"hello, world";
    // dst = 2^40 bytes (varint 0x80 x5, 0x20): refused from its header alone.
    let delta = [12u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x80];
    let e = apply_delta(base, &delta, 1 << 20).unwrap_err();
    assert!(
        e.contains("declares a result of 1099511627776 bytes"),
        "{e}"
    );
    // Within the budget, the same size check still holds the result to its declaration.
    assert_eq!(
        apply_delta(base, &[12, 3, 3, b'a', b'b', b'c'], 3).unwrap(),
        b"abc"
    );
    assert!(apply_delta(base, &[12, 3, 3, b'a', b'b', b'c'], 2).is_err());
}

/// A pack of whole objects and ref-deltas: (type, base id of a ref-delta, inflated bytes).
fn raw_pack(objects: &[(u8, Option<Oid>, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = b"PACK\0\0\0\x02".to_vec();
    out.extend((objects.len() as u32).to_be_bytes());
    for (kind, base, data) in objects {
        let mut size = data.len() as u64;
        let mut c = (kind << 4) | (size & 15) as u8;
        size >>= 4;
        while size > 0 {
            out.push(c | 0x80);
            c = (size & 0x7f) as u8;
            size >>= 7;
        }
        out.push(c);
        if let Some(b) = base {
            out.extend(b.0);
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(data).unwrap();
        out.extend(z.finish().unwrap());
    }
    let sum = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &out);
    out.extend(sum.as_ref());
    out
}

#[test]
fn a_ref_delta_declaring_a_huge_result_is_refused_within_a_small_pack() {
    let blob = vec![b'z'; 1 << 16];
    let id = object_id(Kind::Blob, &blob);
    // 1 GiB from 16384 copies of the whole base (op 0x80: offset 0, length 0x10000).
    let mut delta = vec![0x80, 0x80, 0x04]; // src 65536
    delta.extend([0x80, 0x80, 0x80, 0x80, 0x04]); // dst 2^30
    delta.extend(std::iter::repeat_n(0x80u8, 1 << 14));
    let pack = raw_pack(&[(3, None, blob), (7, Some(id), delta)]);
    assert!(pack.len() < 4096, "{}", pack.len());
    let e = Pack::parse(&pack).unwrap_err().to_string();
    assert!(e.contains("declares a result of 1073741824 bytes"), "{e}");
}

#[test]
fn commits_are_read_as_git_reads_them() {
    let (t, p, q) = ("a".repeat(40), "b".repeat(40), "c".repeat(40));
    let who = "author A <a@a> 1 +0000\ncommitter C <c@c> 1 +0000";
    let c = parse_commit(
        format!("tree {t}\nparent {p}\nparent {q}\n{who}\n\nmsg\nparent {t}\n").as_bytes(),
    )
    .unwrap();
    assert_eq!(
        c.parents,
        [Oid::parse_hex(&p).unwrap(), Oid::parse_hex(&q).unwrap()]
    );
    assert_eq!(c.disorder, None);
    // A parent after committer is no parent to git: a root commit, and out of order.
    let c = parse_commit(format!("tree {t}\n{who}\nparent {p}\n\nmsg").as_bytes()).unwrap();
    assert_eq!(c.parents, []);
    assert_eq!(
        c.disorder.as_deref(),
        Some("a 'parent' line after its 'committer' line")
    );
    let c =
        parse_commit(format!("tree {t}\nparent {p}\n{who}\nauthor B <b@b> 1 +0000\n\n").as_bytes())
            .unwrap();
    assert_eq!(
        c.disorder.as_deref(),
        Some("a 'author' line after its 'committer' line")
    );
    let c = parse_commit(format!("tree {t}\ncommitter C <c@c> 1 +0000\n\n").as_bytes()).unwrap();
    assert!(c.disorder.is_some());
    for bad in [
        format!("parent {p}\ntree {t}\n{who}\n\n"),
        format!("tree {t}\nparent xyz\n{who}\n\n"),
        format!("tree {}\n{who}\n\n", &t[..39]),
        String::new(),
    ] {
        assert!(parse_commit(bad.as_bytes()).is_err(), "{bad}");
    }
}
