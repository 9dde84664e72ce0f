//! What every exchange of one pipelock shares: the policy, egress, the leaf minter, the
//! upstream client, the audit log and the redactor, built once by [`super::proxy`] and read by
//! each [`super::exchange`].

use std::sync::Arc;

use hyper_util::client::legacy::Client;

use super::boxed::Body;
use super::mint::Minter;
use super::policy::Policy;
use super::upstream::Connector;
use crate::bundle::audit::AuditLog;
use crate::bundle::dlp::Redactor;
use crate::bundle::egress::Egress;

/// What every connection shares.
pub struct State {
    /// The allowlist and DLP, with what a person granted for this run.
    pub(super) policy: Policy,
    /// Whether supervise runs beside pipelock (its refusals then say how to ask a person).
    pub(super) supervise: bool,
    pub(super) egress: Egress,
    pub(super) minter: Minter,
    pub(super) client: Client<Connector, Body>,
    pub(super) audit: Arc<AuditLog>,
    /// Masks what DLP's rules match in a host or path before the audit log keeps it.
    pub(super) redactor: Arc<Redactor>,
}
