//! A push as git's receive-pack protocol carries it (`gitprotocol-pack(5)`, "Pushing Data To
//! a Server"): the capabilities git-gate advertises for an upstream, the request (update
//! commands, the first with the client's capabilities, a flush, then the pack), the decision
//! over all of it ([`decide`]), and the report-status answer git-gate writes itself when it
//! refuses (in side-band 1 with progress lines in band 2 when the client asked for
//! `side-band-64k`), so that `git push` prints `! [remote rejected] REF (git-gate: …)`.

use super::pack::{Oid, Pack};
use super::pkt::{self, Pkt};
use super::policy::{self, Command, Refusal, Rule};
use crate::daemons::git_gate::Upstream;

/// Capabilities git-gate passes on when the upstream has them: what it can honour.
/// `report-status` and `side-band-64k` are relayed from the upstream; `delete-refs` is
/// advertised so that a deletion reaches git-gate and is refused with the rule's words (git
/// would refuse it itself, naming no rule); `atomic` and `quiet` are the upstream's business.
const PASSED_ON: &[&str] = &[
    "report-status",
    "side-band-64k",
    "ofs-delta",
    "atomic",
    "quiet",
    "delete-refs",
    "object-format=sha1",
];

/// Every capability git-gate may pass on.
pub fn passed_on() -> Vec<String> {
    PASSED_ON.iter().map(|c| c.to_string()).collect()
}

/// The capabilities git-gate advertises to the guest for a receive-pack: those of
/// [`PASSED_ON`] the upstream has, `no-thin` (so packs are self-contained and the
/// fast-forward check can read them), and its agent.
pub fn receive_caps(upstream: &[String]) -> Vec<String> {
    let mut caps: Vec<String> = PASSED_ON
        .iter()
        .filter(|c| upstream.iter().any(|u| u == *c))
        .map(|c| c.to_string())
        .collect();
    caps.push("no-thin".into());
    caps.push(format!(
        "agent=git-gate/bottle-{}",
        env!("CARGO_PKG_VERSION")
    ));
    caps
}

/// A push request, read.
#[derive(Debug)]
pub struct Request<'a> {
    pub commands: Vec<Command>,
    pub caps: Vec<String>,
    /// The request up to and with the commands' flush: what is forwarded before the pack.
    pub head: &'a [u8],
    pub pack: &'a [u8],
}

impl Request<'_> {
    pub fn wants(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }
}

/// Reads a push request's commands; `advertised` are the capabilities it may ask for.
pub fn parse<'a>(body: &'a [u8], advertised: &[String]) -> Result<Request<'a>, String> {
    let mut pos = 0;
    let mut commands: Vec<Command> = Vec::new();
    let mut caps = Vec::new();
    loop {
        match pkt::parse(body, &mut pos).map_err(|e| e.to_string())? {
            Pkt::Flush => break,
            Pkt::Special(n) => return Err(format!("unexpected special pkt-line 000{n}")),
            Pkt::Data(line) => {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let (cmd, line_caps) = match line.iter().position(|&b| b == 0) {
                    Some(nul) => (&line[..nul], Some(&line[nul + 1..])),
                    None => (line, None),
                };
                if let Some(c) = line_caps {
                    if !commands.is_empty() {
                        return Err("capabilities after the first command".into());
                    }
                    caps = String::from_utf8_lossy(c)
                        .split(' ')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                let cmd = command(cmd)?;
                if commands.iter().any(|c| c.name == cmd.name) {
                    return Err(format!("{} is updated twice", cmd.name));
                }
                commands.push(cmd);
            }
        }
    }
    for c in &caps {
        if !c.starts_with("agent=") && !advertised.contains(c) {
            return Err(format!("capability {c:?} was not advertised"));
        }
    }
    Ok(Request {
        commands,
        caps,
        head: &body[..pos],
        pack: &body[pos..],
    })
}

fn command(line: &[u8]) -> Result<Command, String> {
    let text = std::str::from_utf8(line).map_err(|_| "a command is not UTF-8".to_string())?;
    if text.starts_with("shallow ") || text.starts_with("push-cert") {
        return Err(format!(
            "{:?} is not supported",
            text.split(' ').next().unwrap_or("")
        ));
    }
    let mut words = text.splitn(3, ' ');
    let (Some(old), Some(new), Some(name)) = (words.next(), words.next(), words.next()) else {
        return Err(format!("{text:?} is not \"OLD NEW REF\""));
    };
    let (Some(old), Some(new)) = (Oid::parse_hex(old), Oid::parse_hex(new)) else {
        return Err(format!("{text:?}: bad object id"));
    };
    if !valid_ref(name) {
        return Err(format!("{name:?} is not a valid ref name"));
    }
    Ok(Command {
        old,
        new,
        name: name.to_string(),
    })
}

/// `git check-ref-format`'s main rules.
fn valid_ref(name: &str) -> bool {
    name.starts_with("refs/")
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.ends_with(".lock")
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && !name.split('/').any(|c| c.is_empty() || c.starts_with('.'))
        && !name
            .bytes()
            .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
}

/// The decision on a push: `Ok` to forward it all, or each command's refusal.
pub fn decide(up: &Upstream, req: &Request<'_>) -> Result<(), Vec<(Command, Refusal)>> {
    let mut refused: Vec<(usize, Refusal)> = Vec::new();
    for (i, c) in req.commands.iter().enumerate() {
        if let Err(r) = policy::check_ref(up, c) {
            refused.push((i, r));
        }
    }
    let needs_pack = req.commands.iter().any(|c| !c.new.is_zero());
    if refused.is_empty() && needs_pack {
        match Pack::parse(req.pack) {
            Err(e) => {
                let r = policy::malformed(format!("bad pack data: {e}"));
                refused.extend((0..req.commands.len()).map(|i| (i, r.clone())));
            }
            Ok(pack) => {
                for (i, c) in req.commands.iter().enumerate() {
                    if let Err(r) = policy::check_ancestry(c, &pack) {
                        refused.push((i, r));
                    }
                }
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let (first, first_rule) = (&req.commands[refused[0].0], refused[0].1.rule);
    Err(req
        .commands
        .iter()
        .enumerate()
        .map(|(i, c)| match refused.iter().find(|(j, _)| *j == i) {
            Some((_, r)) => (c.clone(), r.clone()),
            None => (c.clone(), policy::together(first, first_rule)),
        })
        .collect())
}

/// git-gate's own answer to a push it refused: band-2 lines explaining it, then
/// report-status (`unpack …`, an `ng REF reason` per command), side-band framed when asked.
pub fn refusal_report(caps: &[String], unpack: &str, refused: &[(Command, Refusal)]) -> Vec<u8> {
    let band = caps.iter().any(|c| c == "side-band-64k");
    let mut out = Vec::new();
    if band {
        for (c, r) in refused.iter().filter(|(_, r)| r.rule != Rule::Together) {
            let line = format!("{}: {}\n", c.name, r.message);
            pkt::put_band(&mut out, 2, line.as_bytes());
        }
    }
    if caps.iter().any(|c| c == "report-status") {
        let mut report = Vec::new();
        pkt::put(&mut report, format!("unpack {unpack}\n").as_bytes());
        for (c, r) in refused {
            pkt::put(
                &mut report,
                format!("ng {} {}\n", c.name, r.message).as_bytes(),
            );
        }
        pkt::flush(&mut report);
        if band {
            pkt::put_band(&mut out, 1, &report);
        } else {
            out.extend_from_slice(&report);
        }
    }
    if band {
        pkt::flush(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        pkt::put(&mut v, s.as_bytes());
        v
    }

    fn caps() -> Vec<String> {
        receive_caps(&[
            "report-status".into(),
            "side-band-64k".into(),
            "ofs-delta".into(),
        ])
    }

    #[test]
    fn advertised_caps_add_no_thin_and_drop_what_git_gate_cannot_honour() {
        let c = receive_caps(&[
            "report-status".into(),
            "push-options".into(),
            "report-status-v2".into(),
        ]);
        assert_eq!(c[..2], ["report-status", "no-thin"]);
        assert!(c[2].starts_with("agent=git-gate/"));
    }

    #[test]
    fn commands_caps_and_pack_are_split() {
        let (a, b) = ("1".repeat(40), "2".repeat(40));
        let mut body = line(&format!(
            "{a} {b} refs/heads/agent/x\0report-status agent=git/2\n"
        ));
        body.extend(line(&format!(
            "{} {b} refs/heads/agent/y\n",
            "0".repeat(40)
        )));
        body.extend(b"0000PACKrest");
        let req = parse(&body, &caps()).unwrap();
        assert_eq!(req.commands.len(), 2);
        assert_eq!(req.commands[1].old, Oid::ZERO);
        assert!(req.wants("report-status"));
        assert_eq!(req.pack, b"PACKrest");
        assert!(req.head.ends_with(b"0000"));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let a = "1".repeat(40);
        for (body, want) in [
            (b"00zz".to_vec(), "four hex digits"),
            (line("nonsense"), "OLD NEW REF"),
            (line(&format!("{a} {a} refs/heads/a..b")), "not a valid ref"),
            (
                [
                    line(&format!("{a} {a} refs/heads/x\0push-options")),
                    b"0000".to_vec(),
                ]
                .concat(),
                "not advertised",
            ),
            (line(&format!("{a} {a} refs/heads/x")), "truncated"),
        ] {
            let e = parse(&body, &caps()).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn refusals_are_reported_per_ref_in_band_one_with_progress_in_band_two() {
        let c = Command {
            old: Oid::ZERO,
            new: Oid([1; 20]),
            name: "refs/heads/main".into(),
        };
        let r = Refusal {
            rule: Rule::Branches,
            message: "git-gate: no".into(),
        };
        let caps = vec!["report-status".to_string(), "side-band-64k".to_string()];
        let out = refusal_report(&caps, "ok", &[(c, r)]);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("\u{2}refs/heads/main: git-gate: no\n"),
            "{text}"
        );
        assert!(text.contains("\u{1}000eunpack ok\n"), "{text}");
        assert!(
            text.contains("ng refs/heads/main git-gate: no\n0000"),
            "{text}"
        );
        assert!(text.ends_with("0000"));
    }
}
