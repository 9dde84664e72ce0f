//! [`Check`]: one check's result, what every check of [`super`] returns. A leaf: the
//! modules that make checks import it from here.

use serde::Serialize;

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `engine`, `kvm`, `disk`, `token`, `identity`, `known_hosts` or `repository`.
    pub check: &'static str,
    pub ok: bool,
    /// What was found, when it passed (or why it was not needed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub problem: Option<String>,
    pub fix: Option<String>,
    /// Passed, but with something to know (KVM unusable when no target needs it): `-` in the
    /// human lines instead of `✓`.
    #[serde(skip)]
    pub note: bool,
}

impl Check {
    pub fn pass(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            ok: true,
            detail: Some(detail.into()),
            problem: None,
            fix: None,
            note: false,
        }
    }
    /// A pass with something to know.
    pub fn note(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            note: true,
            ..Check::pass(check, detail)
        }
    }
    pub fn fail(check: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            check,
            ok: false,
            detail: None,
            problem: Some(problem.into()),
            fix: Some(fix.into()),
            note: false,
        }
    }
}
