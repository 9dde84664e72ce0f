//! DLP: finds credentials in what the guest sends — the URL, each header, the body — before
//! anything leaves the bundle (and before egress injects a real token, so an injected token
//! never trips it). A finding names its rule, never the secret.
//!
//! This module owns the rule catalogue, the recipe's rules and allowed values as compiled
//! ([`Scanner`]), and the scanning of one value or of a body in chunks ([`BodyScanner`]).
//! Submodules: `catalogue` (the regex rules), `field` (the rules written as code),
//! `heuristics` (entropy and false-positive filters), `decode` (escapes), `unwrap` (base64
//! and hex runs), `engine` (prefilter and search), `redact` (masking matches in what the audit
//! log keeps).
//!
//! # Rules
//!
//! In the gitleaks style: each rule has an id (what a refusal and the audit log name), keywords
//! of which one must appear (an Aho-Corasick prefilter, any ASCII case), a bounded regex or
//! code, and a check of what it captured (an entropy floor, a JWT header…).
//!
//! | id | finds | example shape |
//! | --- | --- | --- |
//! | `anthropic-api-key` | Anthropic API and admin keys | `sk-ant-api03-…`, `sk-ant-admin01-…` |
//! | `anthropic-oauth-token` | Anthropic OAuth access and refresh tokens | `sk-ant-oat01-…`, `sk-ant-ort01-…` |
//! | `openai-api-key` | OpenAI keys: project, service account, admin, legacy | `sk-proj-…`, `sk-…T3BlbkFJ…` |
//! | `aws-access-key-id` | AWS access key ids (not the docs' `…EXAMPLE`) | `AKIA` + 16, `ASIA…` |
//! | `aws-secret-access-key` | 40-byte AWS secret keys after an AWS-ish name, entropy ≥ 4 | `aws_secret_access_key = …` |
//! | `github-pat` | GitHub classic personal access tokens | `ghp_` + 36 |
//! | `github-oauth-token` | GitHub OAuth tokens | `gho_…` |
//! | `github-app-token` | GitHub App user-to-server and installation tokens | `ghu_…`, `ghs_…` |
//! | `github-refresh-token` | GitHub refresh tokens | `ghr_…` |
//! | `github-fine-grained-pat` | GitHub fine-grained tokens | `github_pat_` + 22 `_` + 59 |
//! | `gitlab-pat` | GitLab personal, project and group tokens | `glpat-…` |
//! | `gitlab-token` | other GitLab tokens: trigger, deploy, runner, CI job, feed, OAuth… | `glptt-…`, `gldt-…`, `glrt-…`, `GR1348941…` |
//! | `slack-token` | Slack bot, user, app and config tokens | `xoxb-123-456-…`, `xapp-1-…` |
//! | `slack-webhook` | Slack incoming webhooks | `hooks.slack.com/services/T…/B…/…` |
//! | `stripe-secret-key` | Stripe secret keys, live and test | `sk_live_…`, `sk_test_…` |
//! | `stripe-restricted-key` | Stripe restricted keys | `rk_live_…` |
//! | `stripe-webhook-secret` | Stripe webhook signing secrets | `whsec_…` |
//! | `google-api-key` | Google API keys | `AIza` + 35 |
//! | `google-oauth-client-secret` | Google OAuth client secrets | `GOCSPX-…` |
//! | `google-oauth-token` | Google OAuth access tokens | `ya29.…` |
//! | `gcp-service-account-key` | a GCP service-account key file (its key id) | `"private_key_id": "<40 hex>"` |
//! | `private-key` | PEM private keys: RSA, EC, DSA, OpenSSH, PKCS#8, encrypted, PGP (the BEGIN line and the first 40 bytes of key) | `-----BEGIN RSA PRIVATE KEY-----` + base64 |
//! | `jwt` | JSON web tokens whose header decodes to JSON with `alg` | `eyJ….eyJ….…` |
//! | `azure-storage-account-key` | Azure storage account keys (connection strings) | `AccountKey=<86 base64>==` |
//! | `azure-shared-access-key` | Azure Service Bus / Event Hubs keys | `SharedAccessKey=…` |
//! | `azure-ad-client-secret` | Microsoft Entra (Azure AD) client secrets | `abc8Q~…` |
//! | `digitalocean-token` | DigitalOcean personal, OAuth and refresh tokens | `dop_v1_<64 hex>` |
//! | `heroku-api-key` | Heroku API keys: new format, and a UUID after a Heroku name | `HRKU-AA…`, `HEROKU_API_KEY=<uuid>` |
//! | `npm-token` | npm access tokens | `npm_` + 36 |
//! | `pypi-token` | PyPI upload tokens | `pypi-AgEIcHlwaS5vcmc…` |
//! | `huggingface-token` | Hugging Face tokens | `hf_` + 34 letters |
//! | `sendgrid-api-key` | SendGrid keys | `SG.<22>.<43>` |
//! | `shopify-token` | Shopify access tokens and shared secrets | `shpat_<32 hex>` |
//! | `docker-hub-token` | Docker Hub personal and organization tokens | `dckr_pat_…` |
//! | `vault-token` | HashiCorp Vault service and batch tokens | `hvs.…`, `hvb.…` |
//! | `terraform-cloud-token` | Terraform Cloud / Enterprise tokens | `<14>.atlasv1.…` |
//! | `databricks-token` | Databricks tokens | `dapi<32 hex>` |
//! | `groq-api-key` | Groq keys | `gsk_` + 52 |
//! | `xai-api-key` | xAI keys | `xai-` + 80 |
//! | `replicate-token` | Replicate tokens | `r8_` + 37 |
//! | `linear-api-key` | Linear keys | `lin_api_` + 40 |
//! | `postman-api-key` | Postman keys | `PMAK-<24 hex>-<34 hex>` |
//! | `age-secret-key` | age secret keys | `AGE-SECRET-KEY-1…` |
//! | `doppler-token` | Doppler tokens | `dp.pt.…`, `dp.st.…` |
//! | `sentry-token` | Sentry auth tokens | `sntrys_…`, `sntryu_…` |
//! | `grafana-token` | Grafana service-account and Cloud tokens | `glsa_…`, `glc_…` |
//! | `url-password` | a generated-looking password in a URL | `https://user:<password>@host` |
//! | `authorization-header` | a generated-looking `Authorization` value (Basic decoded) | `Authorization: Bearer …` |
//! | `credential-field` | a generated-looking value in a credential-looking field | `"api_key": "…"`, `?token=…`, `DB_PASSWORD=…`, `X-Api-Key: …` |
//!
//! The last three are code (`field`): a value counts when it is 16 bytes or more (12 for a
//! password, 8 in a URL or Basic credentials), at most 512, clears an entropy floor (3.2 bits
//! per byte, 2.9 for hex, lower for short values), has letters and digits or both cases, and
//! is none of: a UUID, a digest written with its algorithm, a version, a number literal, a
//! URL, ARN or path, a placeholder (`${X}`, `<your-key>`, `xxxx`, `example`…), words
//! (`getUserToken`), code (`core::fmt::Debug`, `SNAKE_CASE`, a declaration's type), a run
//! (`123456`), base64 of plain text. These aim at generated credentials; a password a person
//! made of words passes for text.
//!
//! Not findings, in the request target's query only (never a body or a header): the whole
//! value of a signature scheme's own parameter, when the query carries that scheme's
//! signature parameter — such a URL is a grant its host's owner made to fetch it, expiring
//! soon, and downloads are redirected to them:
//!
//! | the query holds | exempt parameter | for the rules |
//! | --- | --- | --- |
//! | `X-Amz-Signature` (AWS SigV4, S3 presigned URLs) | `X-Amz-Credential` | `aws-access-key-id`, `credential-field` |
//! | | `X-Amz-Security-Token`, `X-Amz-Signature` | `credential-field` |
//! | `X-Goog-Signature` (GCS V4 signed URLs) | `X-Goog-Credential`, `X-Goog-Signature` | `credential-field` |
//! | `sig` (Azure SAS; GitHub release-asset redirects) | `jwt` | `jwt` |
//! | | `sig` | `credential-field` |
//!
//! Parameter names match in any ASCII case; the match must start right after the `=`. For
//! the same reason there is no rule for Azure SAS tokens.
//!
//! The recipe's rules (`dlp_rules = [{ id, regex }]`) run beside these over the whole text;
//! the group named `secret`, if any, is the secret. A match that equals or lies inside a
//! recipe's allowed value (`dlp_allow`), or egress's placeholder, is never a finding. A value a
//! person granted for the run through supervise is narrower: it lets through only a finding
//! of the rule it was granted for whose matched value is exactly the granted value (and a
//! generic rule's — `credential-field`, `authorization-header`, `url-password` — finding of
//! that same exact value).
//!
//! # Decoding
//!
//! Rules see the text decoded (`decode`): percent-encoding (URLs, form bodies), JSON string
//! escapes (`\/`, `\uXXXX`, `\"`…) and `\xHH`, again while escapes remain, up to
//! `decode::LEVELS` (4) levels (`%2541` → `%41` → `A`). In the request target, a header value
//! and a body, runs of base64 (24 characters or more, either alphabet, lines wrapped at 40+
//! columns a multiple of 4 joined) and of hex (32 digits or more, either case) are decoded too
//! (`unwrap`), their output decoded as above, and scanned as a second text; the runs in that
//! text are opened the same way, [`NESTED`] (2) levels in all: a key in `base64(file)` and in
//! `base64(base64(file))` is found, a third level is not. Not decoded:
//! `+` as a space, HTML entities, compression (pipelock inflates gzip and deflate request
//! bodies before they get here).
//!
//! # Window
//!
//! A body is decoded into a buffer and scanned in steps: once [`BATCH`] bytes of new text have
//! gathered (or [`STEP`] bytes, whatever the chunks' sizes), and at [`BodyScanner::finish`].
//! The last [`WINDOW`] bytes stay for the next step, so a match of up to `WINDOW - MARGIN`
//! (4032) bytes is found wherever the chunks split it, and is reported once: a step reports
//! only matches ending past what the previous one covered, and leaves a match ending in its
//! last [`MARGIN`] bytes (whose end may still move) to the next. What the runs decode to has
//! a window of its own at each level, stepped with the text's. Memory is at most
//! `(1 + 2 × NESTED) × (WINDOW + STEP)` (340 KiB: the text's window, and at each level a window
//! and one step of runs) plus a few hundred bytes of unfinished escapes and runs, whatever the
//! body's or the chunks' size. Every built-in match is shorter than the window (a JWT up to
//! 4015 bytes; a PEM key is recognized by its BEGIN line and first key bytes, not its whole
//! block); a recipe regex matching more may be missed across steps.
//!
//! So a finding may come some calls after the chunk that held the secret, at the latest from
//! [`BodyScanner::finish`]: a caller must not send a body on before `finish` has returned
//! `None` (a secret split across two chunks cannot be known from the first alone anyway).

mod catalogue;
mod decode;
mod engine;
mod field;
mod heuristics;
mod redact;
#[cfg(test)]
mod tests;
mod unwrap;

use std::sync::Arc;

use anyhow::Result;

use super::shared::DlpGrant;
use crate::daemons::pipelock::Dlp;
use engine::{Accept, Engine};
pub use redact::{REDACTED, Redactor};

/// The bytes of a body kept from one step to the next.
pub const WINDOW: usize = 4096;
/// A match ending this close to the end of what has arrived waits for the next step.
pub const MARGIN: usize = 64;
/// The most a body step decodes and scans at once (a larger chunk is cut).
pub const STEP: usize = 64 * 1024;
/// Small chunks are gathered until this much new text has arrived, so the window is not
/// scanned again for every few bytes.
pub const BATCH: usize = 16 * 1024;
/// How deep base64 and hex runs are opened: the runs in what a run decodes to (base64 of
/// base64, hex of base64) are decoded and scanned too, this many levels in all.
pub const NESTED: usize = 2;

/// A credential found: the id of the rule that matched (what a refusal and the audit log
/// name). Never the matched bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
}

/// The compiled rules: the built-in catalogue and the recipe's, minus its allowed values.
#[derive(Debug)]
pub struct Scanner {
    engine: Engine,
}

impl Scanner {
    /// Compiles the rules DLP is configured with (`None` when DLP is off).
    pub fn new(dlp: &Dlp) -> Result<Option<Arc<Scanner>>> {
        if !dlp.enabled {
            return Ok(None);
        }
        let always = [crate::daemons::egress::PLACEHOLDER];
        let engine = Engine::new(&dlp.rules, &dlp.allow, &always, WINDOW - MARGIN)?;
        Ok(Some(Arc::new(Scanner { engine })))
    }

    /// [`Scanner::new`], letting through each granted finding: a finding of the grant's rule
    /// whose value is exactly the grant's (what a person approved through supervise).
    pub fn with_grants(dlp: &Dlp, grants: &[DlpGrant]) -> Result<Option<Arc<Scanner>>> {
        if !dlp.enabled {
            return Ok(None);
        }
        let always = [crate::daemons::egress::PLACEHOLDER];
        let pairs: Vec<(String, Vec<u8>)> = grants
            .iter()
            .map(|g| (g.rule.clone(), g.value.as_bytes().to_vec()))
            .collect();
        let engine = Engine::new(&dlp.rules, &dlp.allow, &always, WINDOW - MARGIN)?.grant(&pairs);
        Ok(Some(Arc::new(Scanner { engine })))
    }

    /// Scans one whole value: one header as `Name: value`, or any text.
    pub fn scan(&self, bytes: &[u8]) -> Option<Finding> {
        self.scan_as(bytes, false)
    }

    /// Scans a request target (`https://host/path?query`): a signature scheme's own
    /// parameters in its query are no finding (see the module doc).
    pub fn scan_url(&self, url: &[u8]) -> Option<Finding> {
        self.scan_as(url, true)
    }

    fn scan_as(&self, bytes: &[u8], url: bool) -> Option<Finding> {
        let text = decode::decode_all(bytes);
        let accept = Accept {
            after: 0,
            upto: text.len(),
            url,
        };
        if let Some(f) = self.engine.find(&text, accept) {
            return Some(finding(f));
        }
        // A request target's runs too: a signature scheme's own parameters are plain text
        // (the exemption is judged above), so a key id in what a run decodes to is exempt
        // from nothing. Its separators end a run (`/p-q/6768…` holds the hex run `6768…`, not
        // one base64 run from the first `/`); then it is read as is (standard base64 has `/`).
        if url {
            let split: Vec<u8> = text
                .iter()
                .map(|&b| if b"/?&=;:@.,".contains(&b) { b' ' } else { b })
                .collect();
            if let Some(f) = find_in_runs(&self.engine, &split).map(finding) {
                return Some(f);
            }
        }
        find_in_runs(&self.engine, &text).map(finding)
    }

    /// A scanner for a body that arrives in chunks: it keeps a bounded window of the previous
    /// chunk so a secret split across two chunks is found.
    pub fn body(self: &Arc<Self>) -> BodyScanner {
        BodyScanner {
            scanner: self.clone(),
            layers: decode::Layers::default(),
            text: Window::default(),
            derived: Default::default(),
            finished: false,
        }
    }

    /// The ids of the rules in force: the built-in ones, then the recipe's.
    pub fn rules(&self) -> impl Iterator<Item = &str> {
        self.engine.rule_ids()
    }
}

/// The rule that matches what the runs in `text` decode to (their escapes decoded), or what
/// the runs in that decode to, [`NESTED`] levels deep. Scanning and redaction both read
/// single values this way.
fn find_in_runs<'e>(engine: &'e Engine, text: &[u8]) -> Option<&'e str> {
    let mut runs = unwrap::unwrap_all(text);
    for level in 1..=NESTED {
        if runs.is_empty() {
            return None;
        }
        let derived = decode::decode_all(&runs);
        let accept = Accept {
            after: 0,
            upto: derived.len(),
            url: false,
        };
        if let Some(rule) = engine.find(&derived, accept) {
            return Some(rule);
        }
        if level < NESTED {
            runs = unwrap::unwrap_all(&derived);
        }
    }
    None
}

fn finding(rule: &str) -> Finding {
    Finding {
        rule: rule.to_string(),
    }
}

/// Scans a body chunk by chunk with bounded memory.
#[derive(Debug)]
pub struct BodyScanner {
    scanner: Arc<Scanner>,
    layers: decode::Layers,
    /// The decoded text.
    text: Window,
    /// What the text's base64 and hex runs decode to; then what the runs in that decode to.
    derived: [Derived; NESTED],
    finished: bool,
}

/// One level of what base64 and hex runs decode to, read from the level above as it grows.
#[derive(Debug, Default)]
struct Derived {
    unwrap: unwrap::Unwrapper,
    /// One piece's runs, decoded, before their escapes are.
    runs: Vec<u8>,
    layers: decode::Layers,
    text: Window,
}

impl Derived {
    /// Reads the text the level above just added; returns where this level's new text starts.
    fn feed(&mut self, new: &[u8], last: bool) -> usize {
        self.runs.clear();
        self.unwrap.feed(new, &mut self.runs);
        if last {
            self.unwrap.finish(&mut self.runs);
        }
        // A run decodes to fewer bytes than it holds, plus a line break after it.
        self.text
            .reserve(self.runs.len() + decode::MAX_PENDING * decode::LEVELS);
        let start = self.text.buf.len();
        self.layers.decode(&self.runs, last, &mut self.text.buf);
        start
    }

    fn buffered(&self) -> usize {
        self.text.buf.capacity()
            + self.unwrap.pending()
            + self.runs.capacity()
            + self.layers.pending()
    }
}

/// A text scanned in steps, keeping its last [`WINDOW`] bytes from one step to the next.
#[derive(Debug, Default)]
struct Window {
    /// The last [`WINDOW`] bytes of earlier steps, then the current step's.
    buf: Vec<u8>,
    /// Matches ending at or before this offset of `buf` have been looked at.
    seen: usize,
}

impl Window {
    /// Scans what arrived since the last step (all of it when `last`), then keeps the window.
    fn step(&mut self, engine: &Engine, last: bool) -> Option<Finding> {
        let upto = if last {
            self.buf.len()
        } else {
            self.buf.len().saturating_sub(MARGIN)
        };
        let mut found = None;
        if upto > self.seen {
            let accept = Accept {
                after: self.seen,
                upto,
                url: false,
            };
            found = engine.find(&self.buf, accept).map(finding);
            self.seen = upto;
        }
        let drop = self.buf.len().saturating_sub(WINDOW);
        self.buf.drain(..drop);
        self.seen = self.seen.saturating_sub(drop);
        found
    }

    fn reserve(&mut self, more: usize) {
        let need = self.buf.len() + more;
        if need > self.buf.capacity() {
            self.buf.reserve_exact(need - self.buf.len());
        }
    }
}

impl BodyScanner {
    /// Feeds the next chunk; a finding means the request must be refused.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<Finding> {
        if self.finished {
            return None;
        }
        let mut first = None;
        let mut rest = chunk;
        while !rest.is_empty() {
            let room = (WINDOW + STEP).saturating_sub(self.text.buf.len()).max(1);
            let (piece, tail) = rest.split_at(rest.len().min(room));
            rest = tail;
            self.decode(piece, false);
            let full = self.text.buf.len() >= WINDOW + STEP;
            if full || self.text.buf.len() >= self.text.seen + MARGIN + BATCH {
                let found = self.step(false);
                first = first.or(found);
            }
        }
        first
    }

    /// The end of the body.
    pub fn finish(&mut self) -> Option<Finding> {
        if std::mem::replace(&mut self.finished, true) {
            return None;
        }
        self.decode(&[], true);
        self.step(true)
    }

    /// The memory the scanner holds for the body: its buffers' capacity and any unfinished
    /// escape or run. At most `(2 + 2 × NESTED) × (WINDOW + STEP)` plus a few hundred bytes.
    pub fn buffered(&self) -> usize {
        self.text.buf.capacity()
            + self.layers.pending()
            + self.derived.iter().map(Derived::buffered).sum::<usize>()
    }

    fn decode(&mut self, piece: &[u8], last: bool) {
        self.text
            .reserve(piece.len() + decode::MAX_PENDING * decode::LEVELS);
        let start = self.text.buf.len();
        self.layers.decode(piece, last, &mut self.text.buf);
        // What the runs decode to is text too: its escapes are decoded as the body's are,
        // and its runs opened at the next level.
        let mut above: (&[u8], usize) = (&self.text.buf, start);
        for level in &mut self.derived {
            let start = level.feed(&above.0[above.1..], last);
            above = (&level.text.buf, start);
        }
    }

    /// Scans what arrived since the last step in every text (all of it when `last`).
    fn step(&mut self, last: bool) -> Option<Finding> {
        let engine = &self.scanner.engine;
        let mut found = self.text.step(engine, last);
        for level in &mut self.derived {
            let f = level.text.step(engine, last);
            found = found.or(f);
        }
        found
    }
}
