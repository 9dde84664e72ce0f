//! The guest env the bottle sets itself, listed once: the plan refuses these names in a
//! recipe, the config component renders them.

/// The guest env the bottle sets itself (the placeholder credential, telemetry off, the
/// proxy, the trust trio, supervise's URL), each with what it is set to; a recipe may not set
/// them.
pub const FIXED_GUEST_ENV: &[(&str, FixedValue)] = &[
    ("CLAUDE_CODE_OAUTH_TOKEN", FixedValue::Placeholder),
    ("DISABLE_TELEMETRY", FixedValue::On),
    ("DISABLE_ERROR_REPORTING", FixedValue::On),
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", FixedValue::On),
    ("HTTPS_PROXY", FixedValue::Proxy),
    ("HTTP_PROXY", FixedValue::Proxy),
    ("https_proxy", FixedValue::Proxy),
    ("http_proxy", FixedValue::Proxy),
    ("NO_PROXY", FixedValue::NoProxy),
    ("no_proxy", FixedValue::NoProxy),
    ("NODE_EXTRA_CA_CERTS", FixedValue::CaPath),
    ("SSL_CERT_FILE", FixedValue::CaPath),
    ("REQUESTS_CA_BUNDLE", FixedValue::CaPath),
    ("HOME", FixedValue::Home),
    ("USER", FixedValue::User),
    (crate::daemons::supervise::URL_ENV, FixedValue::SuperviseUrl),
];

/// What a variable of [`FIXED_GUEST_ENV`] is set to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedValue {
    /// egress's placeholder, in place of a credential.
    Placeholder,
    /// `1`: a switch turned on.
    On,
    /// pipelock's address.
    Proxy,
    /// What bypasses the proxy (the bundle's address too, when supervise runs).
    NoProxy,
    /// The run's CA in the guest.
    CaPath,
    /// The guest user's home.
    Home,
    /// The guest user.
    User,
    /// supervise's URL; set only when supervise runs.
    SuperviseUrl,
}
