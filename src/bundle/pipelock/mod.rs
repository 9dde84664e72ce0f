//! pipelock: the guest's first and only hop out.
//!
//! A forward proxy (absolute-form `http://` requests and `CONNECT`) on the bundle's address.
//! It allows the hosts the recipe lists (exact names and `*.suffix`; every egress route's host
//! too) and refuses every other with a 403 whose body says what was refused, by which rule,
//! and how a person can allow it. Each request is a line of the audit log
//! ([`crate::bundle::audit`]). Route hosts go through the egress stage
//! ([`crate::bundle::egress`]), in this process: the guest cannot address it.
//!
//! Every `CONNECT` is intercepted: TLS is terminated with a leaf of the run's CA, so DLP sees
//! what the guest sends, egress can set a route's credential, and a refusal is a body the
//! guest's client reads. HTTP/1.1 both ways, kept alive; upstream TLS is verified against the
//! public roots compiled in and, for a route, its `upstream_ca`.
//!
//! Its typed config and port are in `crate::daemons::pipelock`, what the build renders for it
//! in `crate::config::pipelock`. Here:
//!
//! | module | owns |
//! | --- | --- |
//! | [`proxy`] | the listener, guest connections, `CONNECT` and interception |
//! | [`exchange`] | one request: target, allowlist, DLP, egress, upstream, audit event |
//! | [`boxed`] | the body type every stage streams |
//! | [`body`] | streamed bodies: DLP on the way out, scrubbing and counting on the way back |
//! | [`inflate`] | compressed bodies, decoded (bounded): a route's answers for the scrubber, the guest's requests for DLP |
//! | [`mint`] | leaf certificates from the run's CA, cached |
//! | [`upstream`] | connections to upstreams: resolution, `upstream_proxy`, TLS trust |
//! | [`destination`] | which resolved addresses may be connected to (no private ones unless the recipe says so) |
//! | [`state`] | what every exchange shares |
//! | [`refusal`] | pipelock's own answers and their explanatory bodies |
//! | [`allow`] | the allowlist |
//! | [`policy`] | the allowlist and DLP with what a person granted for this run (supervise) |
//!
//! Built on hyper and tokio-rustls directly rather than on a MITM crate (`hudsucker`): the
//! chain needs per-route upstream trust, DLP that can abort a streaming upstream request,
//! header injection and scrubbing in one place, and 403s answered inside the guest's TLS.

pub mod allow;
pub mod body;
pub mod boxed;
pub mod destination;
pub mod exchange;
pub mod inflate;
pub mod mint;
pub mod policy;
pub mod proxy;
pub mod refusal;
pub mod state;
pub mod upstream;

use super::serve::{Context, Serve, Serving};
use crate::daemons::Daemon;
use crate::daemons::pipelock::Config;

pub struct Pipelock;

impl Serve for Pipelock {
    const DAEMON: Daemon = Daemon::Pipelock;
    type Config = Config;

    fn serve(config: Config, ctx: Context) -> Serving {
        Box::pin(async move {
            let proxy = proxy::Proxy::bind(config, ctx).await?;
            proxy.serve().await
        })
    }
}
