//! `[bundle]` in a plan: the bundle container's memory limit, parsed from a size such as
//! `"512MiB"` and checked against what the daemons need.
//!
//! What the daemons need: [`DAEMONS_BASE_MEMORY`] for pipelock, egress, supervise and
//! git-gate at work (runtimes, TLS, DLP scanners, streamed bodies), plus git-gate's pushes,
//! which it holds whole until judged: at most [`MAX_PUSHES`] at once, each up to its
//! upstream's `max_push_bytes`. The default, [`DEFAULT_BUNDLE_MEMORY`], covers that for the
//! default `max_push_bytes` (64 MiB + 4 × 100 MiB = 464 MiB).

use serde::{Deserialize, Serialize};

use super::{Resolver, UpstreamPlan};
use crate::daemons::git_gate::MAX_PUSHES;
use crate::recipe::{self, RecipeError};

/// The bundle's memory limit when `[bundle] memory` is unset: 512 MiB.
pub const DEFAULT_BUNDLE_MEMORY: u64 = 512 << 20;

/// What the daemons need beside git-gate's push bodies: 64 MiB.
pub const DAEMONS_BASE_MEMORY: u64 = 64 << 20;

/// `[bundle]` as planned.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundlePlan {
    /// The container's memory limit in bytes (swap included: the bundle gets no swap).
    pub memory: u64,
}

impl Default for BundlePlan {
    fn default() -> Self {
        BundlePlan {
            memory: DEFAULT_BUNDLE_MEMORY,
        }
    }
}

impl BundlePlan {
    /// Whether this is the default: then it stays out of the config key, so recipes without
    /// `[bundle]` (or with the default written out) keep their hash.
    pub fn is_default(&self) -> bool {
        *self == BundlePlan::default()
    }
}

/// The least memory the bundle runs its daemons in, with these git-gate upstreams.
pub fn needed_memory(upstreams: &[UpstreamPlan]) -> u64 {
    let push = upstreams
        .iter()
        .map(|u| u.max_push_bytes)
        .max()
        .unwrap_or(0);
    DAEMONS_BASE_MEMORY.saturating_add(push.saturating_mul(MAX_PUSHES as u64))
}

/// A size: digits, then optionally a unit (`B`, `KiB`, `MiB`, `GiB`, `TiB`, or docker's `k`,
/// `m`, `g`, `t`, which mean the same powers of 1024), spaces allowed between. Never panics.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = s.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a size; write a number and a unit such as \"512MiB\" or \"1GiB\""
        ));
    }
    let shift = match unit.trim() {
        "" | "B" | "b" => 0,
        "KiB" | "k" | "K" | "kb" | "KB" => 10,
        "MiB" | "m" | "M" | "mb" | "MB" => 20,
        "GiB" | "g" | "G" | "gb" | "GB" => 30,
        "TiB" | "t" | "T" | "tb" | "TB" => 40,
        other => {
            return Err(format!(
                "{text:?} has an unknown unit {other:?}; use B, KiB, MiB, GiB or TiB, e.g. \"512MiB\""
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is too large a size"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large a size"))
}

/// A byte count in the largest binary unit that divides it (`512MiB`), for messages.
pub fn show_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes}B")
}

/// A size rounded up to whole MiB, for a fix to suggest.
fn round_up_mib(bytes: u64) -> String {
    show_size(bytes.div_ceil(1 << 20).saturating_mul(1 << 20))
}

impl Resolver<'_> {
    /// `[bundle]`: the memory limit parsed, and at least what the daemons need with these
    /// upstreams.
    pub(super) fn bundle(
        &self,
        b: &recipe::Bundle,
        upstreams: &[UpstreamPlan],
    ) -> Result<BundlePlan, RecipeError> {
        let needed = needed_memory(upstreams);
        let pushes = |needed: u64| {
            let push = upstreams
                .iter()
                .map(|u| u.max_push_bytes)
                .max()
                .unwrap_or(0);
            if push == 0 {
                format!("the daemons need {}", show_size(needed))
            } else {
                format!(
                    "the daemons need {} ({} for themselves and {MAX_PUSHES} git-gate pushes of max_push_bytes = {} held at once)",
                    round_up_mib(needed),
                    show_size(DAEMONS_BASE_MEMORY),
                    push
                )
            }
        };
        let Some(given) = &b.memory else {
            if DEFAULT_BUNDLE_MEMORY < needed {
                let upstream = upstreams
                    .iter()
                    .max_by_key(|u| u.max_push_bytes)
                    .map(|u| u.name.as_str())
                    .unwrap_or("?");
                // At the largest `max_push_bytes` written: only one written can outgrow it.
                let at = self
                    .recipe
                    .doc
                    .git_gate
                    .upstreams
                    .iter()
                    .filter_map(|u| u.get_ref().max_push_bytes.as_ref())
                    .max_by_key(|m| *m.get_ref())
                    .map_or(0..0, |m| m.span());
                return Err(self.recipe.error_at(
                    at,
                    format!(
                        "[bundle] memory is unset, and its default {} is too small: {}; set [bundle] memory = \"{}\" or lower max_push_bytes of upstream {upstream:?}",
                        show_size(DEFAULT_BUNDLE_MEMORY),
                        pushes(needed),
                        round_up_mib(needed)
                    ),
                ));
            }
            return Ok(BundlePlan::default());
        };
        let memory = parse_size(given.get_ref()).map_err(|why| {
            self.recipe
                .error_at(given.span(), format!("[bundle] memory: {why}"))
        })?;
        if memory == 0 {
            return Err(self.recipe.error_at(
                given.span(),
                format!(
                    "[bundle] memory must be more than 0; leave it out for the default {} or write e.g. \"512MiB\"",
                    show_size(DEFAULT_BUNDLE_MEMORY)
                ),
            ));
        }
        if memory < needed {
            return Err(self.recipe.error_at(
                given.span(),
                format!(
                    "[bundle] memory = {:?} is too small: {}; set it to at least \"{}\"",
                    given.get_ref(),
                    pushes(needed),
                    round_up_mib(needed)
                ),
            ));
        }
        Ok(BundlePlan { memory })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size(" 1 GiB "), Ok(1 << 30));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("0"), Ok(0));
        for bad in ["", "MiB", "-1MiB", "1.5GiB", "12 parsecs", "1MiBx", "0x10"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
        assert!(parse_size("16777216TiB").unwrap_err().contains("too large"));
        assert!(
            parse_size("99999999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }

    /// Fuzz-friendly: any text parses or is refused, never panics, and what parses shows
    /// back as the same number of bytes.
    #[test]
    fn parse_size_never_panics_and_round_trips() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet: Vec<char> = "0123456789 kKmMgGtTbBi\u{e9}-.x".chars().collect();
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 12) as usize;
            let text: String = (0..len)
                .map(|i| alphabet[((seed >> (i * 5)) % alphabet.len() as u64) as usize])
                .collect();
            if let Ok(n) = parse_size(&text) {
                assert_eq!(parse_size(&show_size(n)), Ok(n), "{text:?}");
            }
        }
    }

    #[test]
    fn the_default_covers_the_default_push_cap() {
        let up = UpstreamPlan {
            name: "o".into(),
            source: super::super::UpstreamSource::Local { path: "p".into() },
            branches: vec!["**".into()],
            tags: false,
            max_push_bytes: super::super::DEFAULT_MAX_PUSH_BYTES,
        };
        assert!(needed_memory(std::slice::from_ref(&up)) <= DEFAULT_BUNDLE_MEMORY);
        assert_eq!(needed_memory(&[]), DAEMONS_BASE_MEMORY);
    }
}
