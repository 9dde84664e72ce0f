//! git-gate's bounds, against the real `bottle sidecar --daemons git-gate` and a real OpenSSH
//! upstream ([`git_gate_kit`]): commits read as git reads them (a parent line after
//! `committer` is no parent), a delta's declared size held to the pack's budget before it is
//! allocated (the daemon's peak memory measured), and the cap on pushes in flight.

mod git_gate_kit;
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use git_gate_kit::*;
use support::sshd::{self, Sshd};

#[test]
fn a_commit_whose_parent_line_follows_committer_is_a_force_push() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let gate = Gate::start(
        dir.path(),
        &sshd,
        &sshd.known_hosts_line("127.0.0.1"),
        1 << 20,
    );
    let work = clone(dir.path(), &gate);
    let w = |args: &[&str]| sshd::git(&work, args);
    w(&["checkout", "-q", "-b", "agent/x"]);
    std::fs::write(work.join("a.txt"), "one\n").unwrap();
    w(&["add", "a.txt"]);
    w(&["commit", "-qm", "agent's first"]);
    let out = git_out(&work, &["push", "origin", "agent/x"]);
    assert!(out.status.success(), "{}", text(&out));
    let tip = w(&["rev-parse", "HEAD"]);
    // git reads parents right after `tree` only: to git this is a root commit, whatever the
    // `parent` line below `committer` names (and `git fsck` accepts it).
    let tree = w(&["rev-parse", "HEAD^{tree}"]);
    let who = "A <a@a.invalid> 1700000000 +0000";
    let body =
        format!("tree {tree}\nauthor {who}\ncommitter {who}\nparent {tip}\n\nhistory replaced\n");
    std::fs::write(dir.path().join("commit.txt"), body).unwrap();
    let file = dir.path().join("commit.txt");
    let forged = w(&[
        "hash-object",
        "-t",
        "commit",
        "--literally",
        "-w",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        w(&["rev-list", "--count", &forged]),
        "1",
        "git reads a root"
    );
    let t = refused(
        &work,
        &sshd,
        &[
            "push",
            "--force",
            "origin",
            &format!("{forged}:refs/heads/agent/x"),
        ],
        "git-gate: force push to \"agent/x\" refused",
    );
    assert!(
        t.contains("out of order (a 'parent' line after its 'committer' line)"),
        "{t}"
    );
    assert_eq!(
        sshd.rev("refs/heads/agent/x").as_deref(),
        Some(tip.as_str())
    );
}

/// An object of [`raw_pack`]: its type, a ref-delta's base id, its inflated bytes.
type RawObject = (u8, Option<[u8; 20]>, Vec<u8>);

/// A pack of whole objects and ref-deltas.
fn raw_pack(objects: &[RawObject]) -> Vec<u8> {
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
            out.extend(b);
        }
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(data).unwrap();
        out.extend(z.finish().unwrap());
    }
    let sum = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &out);
    out.extend(sum.as_ref());
    out
}

/// The peak resident memory of process `pid` so far (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn a_ref_delta_declaring_a_huge_result_is_refused_with_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let mut gate = Gate::start(
        dir.path(),
        &sshd,
        &sshd.known_hosts_line("127.0.0.1"),
        1 << 20,
    );
    let before = sshd.state();
    // A 64 KiB blob, and a ref-delta on it declaring 1 GiB, which 16384 one-byte copies of
    // the whole base (op 0x80: offset 0, length 0x10000) would really fill.
    let blob = vec![b'z'; 1 << 16];
    let mut h = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    h.update(format!("blob {}\0", blob.len()).as_bytes());
    h.update(&blob);
    let id: [u8; 20] = h.finish().as_ref().try_into().unwrap();
    let mut delta = vec![0x80, 0x80, 0x04, 0x80, 0x80, 0x80, 0x80, 0x04];
    delta.extend(std::iter::repeat_n(0x80u8, 1 << 14));
    let pack = raw_pack(&[(3, None, blob), (7, Some(id), delta)]);
    assert!(pack.len() < 2048, "{}", pack.len());
    let zero = "0".repeat(40);
    let mut req = pkt(&format!(
        "{zero} {} refs/heads/agent/big\0report-status\n",
        "1".repeat(40)
    ));
    req.extend_from_slice(b"0000");
    req.extend(pack);

    let idle = peak_rss(gate.child.id());
    let (status, body) = post(&gate, dir.path(), &req);
    let peak = peak_rss(gate.child.id());
    eprintln!("git-gate's peak memory: {idle} bytes idle, {peak} after the push");
    assert!(
        peak < idle + (64 << 20),
        "git-gate's peak memory went from {idle} to {peak} bytes"
    );
    assert_eq!(status, "200", "{body}");
    assert!(
        body.contains("ng refs/heads/agent/big git-gate: malformed push: bad pack data")
            && body.contains("declares a result of 1073741824 bytes"),
        "{body}"
    );
    assert_eq!(sshd.state(), before);
    assert!(gate.alive());
}

/// Opens a push whose body stops half way, and leaves it waiting.
fn stalled_push(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /origin/git-receive-pack HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    s.write_all(&[b'0'; 1000]).unwrap();
    s
}

#[test]
fn pushes_in_flight_are_capped_and_fetches_still_answer() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let gate = Gate::start(
        dir.path(),
        &sshd,
        &sshd.known_hosts_line("127.0.0.1"),
        1 << 20,
    );
    // git-gate's cap (server::MAX_PUSHES): four pushes stalled mid-body hold every turn.
    let mut stalled: Vec<TcpStream> = (0..4).map(|_| stalled_push(gate.port)).collect();
    std::thread::sleep(Duration::from_millis(500));
    // A fifth, whole push waits for a turn: no answer while the four hold theirs.
    let mut fifth = TcpStream::connect(("127.0.0.1", gate.port)).unwrap();
    let body = b"zzzz-not-a-pkt-line";
    write!(
        fifth,
        "POST /origin/git-receive-pack HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    fifth.write_all(body).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut answer = Vec::new();
    let waited = fifth.read_to_end(&mut answer);
    assert!(
        waited.is_err() && answer.is_empty(),
        "the fifth push was answered while four held their turns: {}",
        String::from_utf8_lossy(&answer)
    );
    // Fetches are not pushes: the advertisement still answers.
    let out = git_out(dir.path(), &["ls-remote", &gate.url()]);
    assert!(out.status.success(), "{}", text(&out));
    // One stalled push ends: the fifth gets its turn, and its answer.
    drop(stalled.pop());
    fifth
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    fifth.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("malformed push"),
        "{answer}"
    );
}
