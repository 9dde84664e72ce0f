//! Text from the agent (a request's host, value, question or reason, a branch name, a logged
//! path), made safe to print: C0 controls (but line feed and tab), DEL, C1 controls and the
//! bidirectional controls (which reorder what a person reads: `agent/<U+202E>…`) are escaped,
//! as `\u{202e}` in text for people and as `\u202e` in JSON (where serde leaves all but C0 as
//! they are). Every line the CLI prints goes through one of them ([`crate::cli::out`]).

use std::borrow::Cow;

/// Whether `c` must not reach a terminal as it is.
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        | '\u{2028}' | '\u{2029}')
}

fn escaped(s: &str, form: impl Fn(u32) -> String) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(
        s.chars()
            .map(|c| {
                if is_unsafe(c) {
                    form(c as u32)
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

/// For people: each unsafe character as `\u{XXXX}`.
pub fn escape(s: &str) -> Cow<'_, str> {
    escaped(s, |c| format!("\\u{{{c:04x}}}"))
}

/// For JSON text (unsafe characters only occur inside its strings): each as `\uXXXX`.
pub fn json_safe(s: &str) -> Cow<'_, str> {
    escaped(s, |c| format!("\\u{c:04x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_text_stays() {
        let agent = "agent/\u{202e}txt.exe\u{1b}[2J\u{85}\r end\n\tok é 日本";
        assert_eq!(
            escape(agent),
            "agent/\\u{202e}txt.exe\\u{001b}[2J\\u{0085}\\u{000d} end\n\tok é 日本"
        );
        let json = serde_json::to_string(&serde_json::json!({ "b": agent })).unwrap();
        let safe = json_safe(&json);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["b"], agent, "the JSON still says the same");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
    }
}
