//! git-gate's bounds, against the real `bottle sidecar --daemons git-gate` and a real OpenSSH
//! upstream ([`crate::git_gate_kit`]): commits read as git reads them (a parent line after
//! `committer` is no parent), a delta's declared size held to the pack's budget before it is
//! allocated (the daemon's peak memory measured), and the cap on pushes in flight; with
//! pipelock and supervise beside it in one `bottle sidecar`, as in a bundle, twenty pushes at
//! the size cap leave both answering within a second; and one SSH login serves many requests,
//! with a new one once the session died.

use crate::git_gate_kit;
use crate::pipelock_kit;
use crate::support;

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

/// A receive-pack body creating `refs/heads/agent/pNN` at `commit`, ending in `pack`.
fn push_body(n: usize, commit: &str, pack: &[u8]) -> Vec<u8> {
    let zero = "0".repeat(40);
    let mut body = pkt(&format!(
        "{zero} {commit} refs/heads/agent/p{n:02}\0report-status\n"
    ));
    body.extend_from_slice(b"0000");
    body.extend_from_slice(pack);
    body
}

/// A commit holding one incompressible blob of `size` bytes: (commit id, its pack).
fn pack_of_size(dir: &std::path::Path, size: usize) -> (String, Vec<u8>) {
    let repo = dir.join("packed");
    std::fs::create_dir_all(&repo).unwrap();
    sshd::git(&repo, &["init", "-q"]);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(repo.join("blob.bin"), &data).unwrap();
    sshd::git(&repo, &["add", "blob.bin"]);
    sshd::git(&repo, &["commit", "-q", "-m", "big"]);
    let commit = sshd::git(&repo, &["rev-parse", "HEAD"]);
    let tree = sshd::git(&repo, &["rev-parse", "HEAD^{tree}"]);
    let blob = sshd::git(&repo, &["rev-parse", "HEAD:blob.bin"]);
    let mut c = std::process::Command::new("/usr/bin/git")
        .args(["pack-objects", "--stdout", "-q"])
        .current_dir(&repo)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{commit}\n{tree}\n{blob}\n").as_bytes())
        .unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    (commit, out.stdout)
}

/// The resident memory of process `pid` now (`VmRSS`), in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// What the 20 push clients share: how many sent all but their tail, the moment the tails go,
/// and each client's answer with the instant its first byte came.
#[derive(Default)]
struct Pushes {
    held: std::sync::atomic::AtomicUsize,
    release: std::sync::Mutex<bool>,
    go: std::sync::Condvar,
    answers: std::sync::Mutex<Vec<(usize, std::time::Instant, String)>>,
}

/// The bytes a client holds back until the release: the gate cannot finish reading its push.
const TAIL: usize = 1024;

fn push_client(port: u16, n: usize, body: Vec<u8>, shared: std::sync::Arc<Pushes>) {
    use std::sync::atomic::Ordering;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /origin/git-receive-pack HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-git-receive-pack-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (head, tail) = body.split_at(body.len() - TAIL);
    // Returns once the gate has taken all but the kernel's buffers: only with a turn.
    s.write_all(head).unwrap();
    shared.held.fetch_add(1, Ordering::SeqCst);
    let mut go = shared.release.lock().unwrap();
    while !*go {
        go = shared.go.wait(go).unwrap();
    }
    drop(go);
    s.write_all(tail).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut first = [0u8; 1];
    let got = s.read(&mut first).unwrap();
    let at = std::time::Instant::now();
    let mut answer = first[..got].to_vec();
    s.read_to_end(&mut answer).unwrap();
    shared
        .answers
        .lock()
        .unwrap()
        .push((n, at, String::from_utf8_lossy(&answer).into_owned()));
}

/// One request through pipelock and one supervise API call: their round trips.
async fn probe(s: &pipelock_kit::Sidecar, upstream: u16) -> (Duration, Duration) {
    let t = std::time::Instant::now();
    let (status, text) = pipelock_kit::exchange(
        s.port,
        format!("GET http://plain.test:{upstream}/x HTTP/1.1\r\nHost: plain.test:{upstream}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    let proxied = t.elapsed();
    assert!(status == 200 && text.ends_with("ok /x"), "{text}");
    let t = std::time::Instant::now();
    let (status, text) = pipelock_kit::exchange(
        s.supervise_port,
        b"GET /v1/requests HTTP/1.1\r\nHost: supervise\r\nConnection: close\r\n\r\n",
    )
    .await;
    let api = t.elapsed();
    assert!(
        status == 200 && text.contains("\"requests\""),
        "supervise: {text}"
    );
    (proxied, api)
}

/// 20 pushes of exactly `max_push_bytes` at once, beside pipelock and supervise in one
/// `bottle sidecar` as in a bundle: four hold their turns with their bodies read (the gate's
/// resident memory shows them), sixteen wait unanswered; all the while, and while the twenty
/// are then read, judged and forwarded over SSH, a request through pipelock and a supervise
/// call each answer within a second. Then every push has landed and is audited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_pushes_at_the_cap_leave_pipelock_and_supervise_answering_within_a_second() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    const PUSHES: usize = 20;
    const LIMIT: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    // Every push is exactly the cap: max_push_bytes is the size of one.
    let (commit, pack) = pack_of_size(dir.path(), 16 << 20);
    let cap = push_body(0, &commit, &pack).len();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line("127.0.0.1")).unwrap();
    let gate_port = free_port();
    let audit = dir.path().join("git-gate-audit.jsonl");
    let git_gate = bottle::daemons::git_gate::Config {
        port: gate_port,
        listen_host: std::net::Ipv4Addr::LOCALHOST.into(),
        upstreams: vec![bottle::daemons::git_gate::Upstream {
            name: "origin".into(),
            via: bottle::daemons::git_gate::Via::Ssh {
                url: format!("ssh://root@127.0.0.1:{}{}", sshd.port, sshd.bare.display()),
                identity: sshd.client_key.display().to_string(),
                known_hosts: known.display().to_string(),
            },
            branches: vec!["agent/*".into()],
            tags: false,
            max_push_bytes: cap as u64,
        }],
        audit_log: Some(audit.display().to_string()),
    };
    let up = pipelock_kit::upstream(None).await;
    let mut s = pipelock_kit::Sidecar::start_daemons(
        pipelock_kit::Setup {
            allow: vec!["plain.test".into()],
            names: vec!["plain.test".into()],
            git_gate: Some(git_gate),
            ..Default::default()
        },
        "pipelock,git-gate,supervise",
    )
    .await;
    s.wait_for(&format!("git-gate: listening on 127.0.0.1:{gate_port}"))
        .await;
    s.wait_for(&format!(
        "supervise: listening on 127.0.0.1:{}",
        s.supervise_port
    ))
    .await;
    let pid = s.child.id();
    let (p, a) = probe(&s, up.port).await;
    eprintln!("at rest: pipelock {p:?}, supervise {a:?}");
    let rest = rss(pid);

    let shared = Arc::new(Pushes::default());
    let clients: Vec<_> = (0..PUSHES)
        .map(|n| {
            let (body, shared) = (push_body(n, &commit, &pack), shared.clone());
            assert_eq!(body.len(), cap);
            std::thread::spawn(move || push_client(gate_port, n, body, shared))
        })
        .collect();
    // The four turns taken: four bodies (all but their tails) in the gate's memory.
    let held = rest + 4 * (cap as u64 - (1 << 20));
    let deadline = Instant::now() + Duration::from_secs(120);
    while rss(pid) < held || shared.held.load(Ordering::SeqCst) < 4 {
        assert!(
            Instant::now() < deadline,
            "the gate never held four pushes: {} sent, {} bytes resident (at rest {rest})",
            shared.held.load(Ordering::SeqCst),
            rss(pid)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut worst = (Duration::ZERO, Duration::ZERO);
    for _ in 0..10 {
        let (p, a) = probe(&s, up.port).await;
        worst = (worst.0.max(p), worst.1.max(a));
    }
    // Still in flight after the probes: four turns held, sixteen waiting, none answered.
    let during = rss(pid);
    assert!(during >= held, "{during} < {held}");
    assert_eq!(
        shared.held.load(Ordering::SeqCst),
        4,
        "git-gate's cap: four pushes read at once, the rest wait their turn"
    );
    assert!(shared.answers.lock().unwrap().is_empty());
    eprintln!(
        "4 pushes held ({} MiB resident, {} at rest), 16 waiting: pipelock {:?}, supervise {:?} at worst",
        during >> 20,
        rest >> 20,
        worst.0,
        worst.1
    );
    assert!(
        worst.0 < LIMIT && worst.1 < LIMIT,
        "while pushes were held: {worst:?}"
    );

    // The tails go: all twenty are read, judged and forwarded, four at a time.
    let released = Instant::now();
    *shared.release.lock().unwrap() = true;
    shared.go.notify_all();
    let (mut probes, mut worst) = (0, (Duration::ZERO, Duration::ZERO));
    while shared.answers.lock().unwrap().len() < PUSHES {
        assert!(
            released.elapsed() < Duration::from_secs(600),
            "the pushes did not finish"
        );
        let (p, a) = probe(&s, up.port).await;
        worst = (worst.0.max(p), worst.1.max(a));
        probes += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = released.elapsed();
    eprintln!(
        "20 pushes of {cap} bytes done in {took:?}; {probes} probes meanwhile: pipelock {:?}, supervise {:?} at worst",
        worst.0, worst.1
    );
    assert!(
        probes >= 5,
        "only {probes} probes while the pushes went: too fast to tell"
    );
    assert!(
        worst.0 < LIMIT && worst.1 < LIMIT,
        "while pushes were forwarded: {worst:?}"
    );
    for c in clients {
        c.join().unwrap();
    }
    let answers = shared.answers.lock().unwrap().clone();
    for (n, at, answer) in &answers {
        assert!(*at >= released, "push {n} answered before the release");
        assert!(
            answer.starts_with("HTTP/1.1 200")
                && answer.contains(&format!("ok refs/heads/agent/p{n:02}")),
            "push {n}: {answer}"
        );
        assert_eq!(
            sshd.rev(&format!("refs/heads/agent/p{n:02}")).as_deref(),
            Some(commit.as_str())
        );
    }
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for n in 0..PUSHES {
        let name = format!("refs/heads/agent/p{n:02}");
        let lines = events
            .iter()
            .filter(|e| e["git"]["ref_name"] == name.as_str())
            .collect::<Vec<_>>();
        assert!(
            lines.len() == 1 && lines[0]["rule"] == "upstream",
            "{name}: {lines:?}"
        );
    }
}

/// Requests through the gate share one SSH session with the upstream: fetches one after
/// another (more than OpenSSH's ten channels per connection, so closed channels must be
/// given back), fetches at once and a push make one login in sshd's log; once the server
/// drops the connection, the next request logs in again and answers.
#[test]
fn one_ssh_login_serves_every_request_and_a_dead_session_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = Sshd::start(dir.path());
    let gate = Gate::start(
        dir.path(),
        &sshd,
        &sshd.known_hosts_line("127.0.0.1"),
        1 << 20,
    );
    assert_eq!(sshd.logins(), 0);
    let work = clone(dir.path(), &gate);
    let upstream_refs = |s: &Sshd| {
        let mut v: Vec<String> = s.refs().lines().map(|l| l.replace(' ', "\t")).collect();
        v.sort();
        v
    };
    let ls_remote = || {
        let out = git_out(dir.path(), &["ls-remote", "--refs", &gate.url()]);
        assert!(out.status.success(), "{}", text(&out));
        let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    for _ in 0..12 {
        let out = git_out(&work, &["fetch", "-q", "origin"]);
        assert!(out.status.success(), "{}", text(&out));
    }
    std::thread::scope(|s| {
        let all: Vec<_> = (0..6).map(|_| s.spawn(ls_remote)).collect();
        for h in all {
            assert_eq!(h.join().unwrap(), upstream_refs(&sshd));
        }
    });
    let w = |args: &[&str]| sshd::git(&work, args);
    w(&["checkout", "-q", "-b", "agent/reuse"]);
    std::fs::write(work.join("r.txt"), "reused\n").unwrap();
    w(&["add", "r.txt"]);
    w(&["commit", "-qm", "over the kept session"]);
    let out = git_out(&work, &["push", "-q", "origin", "agent/reuse"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        sshd.rev("refs/heads/agent/reuse"),
        Some(w(&["rev-parse", "HEAD"]))
    );
    assert_eq!(
        sshd.logins(),
        1,
        "one login for a clone, 12 fetches, 6 at once and a push:\n{}",
        sshd.log_text()
    );

    // The server drops the session: the next request logs in again, once.
    assert_eq!(sshd.drop_connections(), 1, "one connection to drop");
    assert_eq!(ls_remote(), upstream_refs(&sshd));
    assert_eq!(ls_remote(), upstream_refs(&sshd));
    assert_eq!(sshd.logins(), 2, "{}", sshd.log_text());
}
