//! How a request is shown to the person who answers it, so an approval means what they saw:
//! a DLP value whole, or (too long for one line) its length and a fingerprint with the
//! command that prints it whole — never cut without saying so; a host that is an IP address
//! (in any spelling a resolver takes, `2130706433` included) with its class, and for a
//! private one the note that the grant does not lift pipelock's private-destination rule.

use std::net::{IpAddr, Ipv4Addr};

use crate::daemons::netclass::{AddrClass, classify};

/// The longest escaped value or question shown whole in a listing.
pub const SHOWN: usize = 100;

/// A value's fingerprint: the first 16 hex digits of its blake3.
pub fn fingerprint(value: &str) -> String {
    blake3::hash(value.as_bytes()).to_hex()[..16].to_string()
}

/// `text` escaped for one line, whole when short, else its length and fingerprint.
pub fn value(text: &str) -> String {
    let escaped = text.escape_debug().to_string();
    if escaped.chars().count() <= SHOWN {
        format!("{escaped} ({} bytes)", text.len())
    } else {
        format!(
            "{} bytes, fingerprint {} (too long for a line: `bottle supervise RUN --show ID` prints it whole)",
            text.len(),
            fingerprint(text)
        )
    }
}

/// A question: whole when short, else its start and a note that it goes on.
pub fn question(text: &str) -> String {
    let escaped = text.escape_debug().to_string();
    match escaped.char_indices().nth(SHOWN) {
        None => escaped,
        Some((i, _)) => format!(
            "{}… (cut: {} bytes in all; `bottle supervise RUN --show ID` prints it whole)",
            &escaped[..i],
            text.len()
        ),
    }
}

/// A host, with its class when it is an IP address.
pub fn host(host: &str) -> String {
    let shown = host.escape_debug().to_string();
    let Some(ip) = ip_of(host) else {
        return shown;
    };
    let class = classify(ip);
    let spelled = if ip.to_string() == host.trim_matches(['[', ']']) {
        String::new()
    } else {
        format!(" = {ip}")
    };
    if class == AddrClass::Public {
        format!("{shown} (IP address{spelled}, public)")
    } else {
        format!(
            "{shown} (IP address{spelled}, {class}: pipelock still refuses it unless the recipe lists it under [pipelock] allow_private)"
        )
    }
}

/// The address a host names when it is an IP literal: IPv6 (bracketed or not), dotted IPv4,
/// or the numeric forms `inet_aton` takes (`2130706433`, `0x7f.1`, `017700000001`).
pub fn ip_of(host: &str) -> Option<IpAddr> {
    let h = host.trim().trim_end_matches('.');
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<u64> = h.split('.').map(number).collect::<Option<_>>()?;
    let v = match parts.as_slice() {
        [a] => *a,
        [a, b] if *a < 256 && *b < 1 << 24 => a << 24 | b,
        [a, b, c] if *a < 256 && *b < 256 && *c < 1 << 16 => a << 24 | b << 16 | c,
        [a, b, c, d] if [a, b, c, d].iter().all(|x| **x < 256) => a << 24 | b << 16 | c << 8 | d,
        _ => return None,
    };
    u32::try_from(v).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v)))
}

/// One part of an `inet_aton` address: decimal, `0x` hex or `0` octal.
fn number(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok();
    }
    if s.len() > 1 && s.starts_with('0') {
        return u64::from_str_radix(&s[1..], 8).ok();
    }
    if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_hosts_are_named_with_their_class() {
        for h in [
            "2130706433",
            "127.0.0.1",
            "0x7f.1",
            "017700000001",
            "127.1",
            "[::1]",
        ] {
            let shown = host(h);
            assert!(
                shown.contains("loopback") && shown.contains("allow_private"),
                "{shown}"
            );
        }
        assert!(host("2130706433").contains("= 127.0.0.1"));
        assert!(host("169.254.169.254").contains("cloud metadata"));
        assert!(host("8.8.8.8").ends_with("(IP address, public)"));
        assert_eq!(host("api.example.com"), "api.example.com");
        assert_eq!(ip_of("1.2.3.4.5"), None);
        assert_eq!(ip_of("99999999999"), None);
    }

    #[test]
    fn long_values_are_never_cut_silently() {
        let short = value("a\nb");
        assert_eq!(short, "a\\nb (3 bytes)");
        let long = "x".repeat(80) + &"y".repeat(80);
        let shown = value(&long);
        assert!(
            shown.contains("160 bytes") && shown.contains(&fingerprint(&long)),
            "{shown}"
        );
        assert!(shown.contains("--show ID"), "{shown}");
        assert!(
            !shown.contains("xxxxx"),
            "no part shown as if it were all: {shown}"
        );
        let q = question(&"q".repeat(300));
        assert!(
            q.contains("cut: 300 bytes") && q.contains("--show ID"),
            "{q}"
        );
    }
}
