//! `POST /NAME/git-receive-pack`: a push, read whole (cut at `max_push_bytes`), judged, and
//! either answered by git-gate (a refusal, in git's report-status) or forwarded byte for byte
//! to the upstream's `git-receive-pack`, whose answer is relayed and read for the audit log.

use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::policy::Command;
use super::policy::{self, Rule};
use super::push;
use super::remote;
use super::server::{
    Audit, Body, State, decode, full, git, is_gzip, read_body, read_report, relay, send_all, text,
};
use crate::bundle::log::log;
use crate::daemons::audit::Decision;
use crate::daemons::git_gate::Service;
use crate::daemons::git_gate::Upstream;

const RESULT: &str = "git-receive-pack-result";

impl State {
    pub(super) async fn receive(&self, up: &Upstream, req: Request<Incoming>) -> Response<Body> {
        let audit = Audit {
            state: self,
            up,
            service: Service::ReceivePack,
            started: Instant::now(),
        };
        // Held until the push is judged (and forwarded): at most MAX_PUSHES bodies in memory.
        let Ok(_permit) = self.pushes.acquire().await else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "git-gate is stopping");
        };
        let gzip = is_gzip(&req);
        let hint = req
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let limit = up.max_push_bytes;
        let body = match read_body(req.into_body(), limit, hint)
            .await
            .and_then(|b| decode(gzip, b, limit))
        {
            Ok(b) => b,
            Err(e) => {
                let why = policy::too_large(up).message;
                return self.bad_body(&audit, e, Rule::MaxPushBytes.name(), &why);
            }
        };
        // git's probe before a large push: a flush alone, answered with nothing.
        if body.is_empty() || &body[..] == b"0000" {
            return git(RESULT, full(Vec::new()));
        }
        // Reading the pack is CPU work: off the async workers.
        let judged = {
            let (body, up) = (body.clone(), up.clone());
            tokio::task::spawn_blocking(move || judge(&body, &up)).await
        };
        let judged = match judged {
            Ok(j) => j,
            Err(e) => {
                log(
                    WHO,
                    format!("upstream {}: judging a push failed: {e}", up.name),
                );
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "git-gate: the push could not be judged",
                );
            }
        };
        let (request, decision) = match judged {
            Ok(j) => j,
            Err(why) => {
                let r = policy::malformed(&why);
                log(WHO, format!("upstream {}: {}", up.name, r.message));
                audit.record(
                    Decision::Invalid,
                    Rule::Malformed.name(),
                    400,
                    (0, body.len() as u64),
                );
                return text(StatusCode::BAD_REQUEST, &r.message);
            }
        };
        let bytes_in = body.len() as u64;
        if let Err(refused) = decision {
            let unpack = match refused.iter().find(|(_, r)| r.rule == Rule::Malformed) {
                Some((_, r)) => r.message.clone(),
                None => "ok".to_string(),
            };
            for (c, r) in refused.iter().filter(|(_, r)| r.rule != Rule::Together) {
                log(
                    WHO,
                    format!("upstream {}: refused {}: {}", up.name, c.name, r.message),
                );
            }
            let rows: Vec<_> = refused
                .iter()
                .map(|(c, r)| {
                    let d = if r.rule == Rule::Malformed {
                        Decision::Invalid
                    } else {
                        Decision::Refused
                    };
                    (c.clone(), d, r.rule.name().to_string())
                })
                .collect();
            let answer = push::refusal_report(&request.caps, &unpack, &refused);
            audit.record_push(&rows, 200, (answer.len() as u64, bytes_in));
            return git(RESULT, full(answer));
        }
        let commands = request.commands.clone();
        let band = request.wants("side-band-64k");
        let reports = request.wants("report-status");
        let head = body.slice(..request.head_len);
        let pack = body.slice(request.head_len..);
        self.forward(
            &audit,
            commands,
            (band, reports),
            vec![head, pack],
            bytes_in,
        )
        .await
    }

    /// Sends an accepted push to the upstream and relays its answer.
    async fn forward(
        &self,
        audit: &Audit<'_>,
        commands: Vec<Command>,
        (band, reports): (bool, bool),
        parts: Vec<bytes::Bytes>,
        bytes_in: u64,
    ) -> Response<Body> {
        let up = audit.up;
        let mut remote = match remote::open(up, Service::ReceivePack).await {
            Ok(r) => r,
            Err(e) => return audit.failed(&e, &commands),
        };
        let mut left = Vec::new();
        if let Err(e) = remote.advertisement(&mut left).await {
            return audit.failed(&e, &commands);
        }
        send_all(&mut remote, parts);
        let log_to = self.audit.clone();
        let template = audit.event(Decision::Allowed, "upstream", 200, (0, bytes_in));
        let upstream = up.name.clone();
        let body = relay(remote, left, move |bytes_out, answer| {
            let report = read_report(band, &answer);
            for c in &commands {
                let mut e = template.clone();
                e.bytes_out = bytes_out;
                match report.get(&c.name) {
                    Some(None) => {}
                    Some(Some(why)) => {
                        e.decision = Decision::Failed;
                        log(
                            WHO,
                            format!("upstream {upstream} refused {}: {why}", c.name),
                        );
                    }
                    // No line for it: the upstream ended early (or was not asked to report).
                    None if reports => e.decision = Decision::Failed,
                    None => {}
                }
                e.git = Some(crate::daemons::audit::GitUpdate {
                    upstream: upstream.clone(),
                    ref_name: c.name.clone(),
                    old: c.old.to_string(),
                    new: c.new.to_string(),
                });
                log_to.record(&e);
            }
        });
        git(RESULT, body)
    }
}

const WHO: &str = "git-gate";

/// A push request as judged: its commands, capabilities and where its pack starts.
struct Judged {
    commands: Vec<Command>,
    caps: Vec<String>,
    head_len: usize,
}

impl Judged {
    fn wants(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }
}

type Verdict = Result<(), Vec<(Command, policy::Refusal)>>;

/// Reads the request and decides on it; `Err` for a request that cannot be read.
fn judge(body: &[u8], up: &Upstream) -> Result<(Judged, Verdict), String> {
    let advertised = push::receive_caps(&push::passed_on());
    let request = push::parse(body, &advertised)?;
    if request.commands.is_empty() {
        return Err("no ref update before the pack".to_string());
    }
    let decision = push::decide(up, &request);
    Ok((
        Judged {
            commands: request.commands,
            caps: request.caps,
            head_len: request.head.len(),
        },
        decision,
    ))
}
