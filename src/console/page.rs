//! The page: HTML, CSS and JS embedded in the binary (no build step, nothing loaded from
//! elsewhere). The script sets every piece of agent text with `textContent` — never as HTML —
//! and shows control and bidi characters as visible escapes.

/// The page, with `{{CSRF}}` to fill.
const INDEX: &str = include_str!("page/index.html");
pub const SCRIPT: &str = include_str!("page/app.js");
pub const STYLE: &str = include_str!("page/style.css");

/// The Content-Security-Policy of every answer: this origin's script and style only, no
/// frames, no forms, no other hosts.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page for a session whose CSRF token is `csrf` (hex digits only).
pub fn index(csrf: &str) -> String {
    debug_assert!(csrf.bytes().all(|b| b.is_ascii_hexdigit()));
    INDEX.replace("{{CSRF}}", csrf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn agent_text_is_never_html() {
        // The script writes text with textContent only: no innerHTML, outerHTML,
        // insertAdjacentHTML, document.write or eval anywhere.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
        ] {
            assert!(!super::SCRIPT.contains(sink), "app.js uses {sink}");
        }
        assert!(super::SCRIPT.contains("textContent"));
        let page = super::index("ab12");
        assert!(page.contains("content=\"ab12\""));
        assert!(!page.contains("{{CSRF}}"));
        assert!(
            !page.contains("http"),
            "the page loads nothing from elsewhere"
        );
    }
}
