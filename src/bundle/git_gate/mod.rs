//! git-gate: the guest's git remotes point at it (smart HTTP on the bundle's port 9418); it
//! relays fetches to the real upstream and forwards the pushes its policy accepts, over SSH
//! with the upstream's identity key, which is mounted into the bundle only and never enters
//! the guest — or, for a local upstream (a repository on the host), through the socket `bottle
//! run` serves it on ([`local`]), the repository itself mounted nowhere.
//!
//! It speaks git in Rust — no git binary in the bundle, which stays `FROM scratch` with this
//! one executable:
//! - **Fetch and clone** pass through: `GET /NAME/info/refs?service=git-upload-pack` is the
//!   upstream's advertisement, and each `POST /NAME/git-upload-pack` (stateless negotiation:
//!   protocol v0/v1, `Git-Protocol: version=2` is ignored) is relayed to a fresh
//!   `git-upload-pack` on the upstream, its answer streamed back.
//! - **Push**: `GET …?service=git-receive-pack` advertises the upstream's refs with the
//!   capabilities git-gate can honour plus `no-thin`; `POST /NAME/git-receive-pack` is read
//!   whole (counted as it streams, cut at `max_push_bytes`; at most `crate::daemons::git_gate::MAX_PUSHES` in
//!   flight, the others waiting their turn), judged off the async workers by the policy
//!   ([`policy`]: namespaces, deletions, `branches`, `tags`, fast-forward from the pushed pack,
//!   size) and either refused as a whole with git's report-status, so `git push` prints the
//!   rule, or forwarded byte for byte to the upstream's `git-receive-pack`, whose report is
//!   relayed. Nothing reaches the upstream for a refused or malformed push.
//! - Every push is one audit line per ref update ([`crate::daemons::audit::GitUpdate`]), and
//!   every upload-pack exchange one line, in the run's audit log.
//!
//! Its typed config (upstreams with their way and policy), port, upstream URLs, known_hosts
//! and the local socket's protocol are in `crate::daemons::git_gate`; its mounts and the
//! guest's git config are rendered by `crate::config::git_gate`. Here, its serving:
//!
//! | module | owns |
//! | --- | --- |
//! | [`server`] | the HTTP listener, routes, the advertisements and fetches, relaying, audit lines |
//! | `receive` | a push: read, judged, refused or forwarded |
//! | [`push`] | the receive-pack request, advertised capabilities, the decision, refusals' reports |
//! | [`policy`] | the rules and their words |
//! | [`pack`] | pack parsing, delta resolution, the fast-forward walk |
//! | [`delta`] | applying one delta |
//! | [`pkt`] | pkt-lines, side-band, ref advertisements |
//! | [`remote`] | one git service on an upstream, either way: its stdin, stdout, stderr, errors |
//! | [`ssh`] | the SSH client (russh) |
//! | [`local`] | git-gate's side of the local upstream's socket |

pub mod delta;
pub mod local;
pub mod pack;
pub mod pkt;
pub mod policy;
pub mod push;
mod receive;
pub mod remote;
pub mod server;
pub mod ssh;

use super::serve::{Context, Serve, Serving};
use crate::daemons::Daemon;
use crate::daemons::git_gate::Config;

pub struct GitGate;

impl Serve for GitGate {
    const DAEMON: Daemon = Daemon::GitGate;
    type Config = Config;

    fn serve(config: Config, ctx: Context) -> Serving {
        Box::pin(async move {
            let gate = server::Gate::bind(config, &ctx.run_id).await?;
            gate.serve().await
        })
    }
}
