//! The guide the agent reads: `~/.bottle/SUPERVISE.md` in the guest, and `GET /` of the API.
//! Short, with the API and a line to copy for curl and for busybox wget.

use super::{DEFAULT_WAIT, MAX_PENDING, MAX_WAIT};

/// The guide; `url`: supervise's address when known (the guest file names it).
pub fn text(url: Option<&str>) -> String {
    let here = url.map(|u| format!(" (here `{u}`)")).unwrap_or_default();
    format!(
        r#"# Asking a person: supervise

This bottle's traffic policy refuses hosts off its allowlist and requests that carry what
looks like a credential, with a 403 saying why. You can ask the person who runs the bottle
to allow such a thing for this run, or ask them a question. They answer on their machine
(`bottle supervise`); an approval takes effect within a second, then send your request again.

The API is JSON over HTTP at `$BOTTLE_SUPERVISE_URL`{here}. Talk to it directly, not through
the proxy (`NO_PROXY` names it; busybox wget needs `-Y off`).

- `POST /v1/requests?wait=SECONDS` with one of
  - `{{"kind":"allow_host","host":"pypi.org","why":"pip install requests"}}`: reach a host
    (one exact name, no wildcard) for the rest of this run;
  - `{{"kind":"allow_dlp","rule":"RULE","value":"VALUE","why":"…"}}`: let DLP pass a value its
    rule RULE flagged (the 403 names the rule) that is not a credential;
  - `{{"kind":"question","text":"Which branch should I push to?"}}`.
  It waits for the answer up to SECONDS (default {DEFAULT_WAIT}, at most {MAX_WAIT}) and returns
  `{{"id":"…","status":"pending|approved|denied|answered","reason":"…","answer":"…"}}`
  (`reason` and `answer` when the person gave them).
- `GET /v1/requests/ID?wait=SECONDS`: the same request, waiting again while `pending`.
- `GET /v1/requests`: every request of this run.

Asking again for something pending returns the same request. At most {MAX_PENDING} requests may
wait at once. Errors are `{{"error":"…"}}` with a 4xx status saying what to fix.

    curl -sS -X POST "$BOTTLE_SUPERVISE_URL/v1/requests?wait={MAX_WAIT}" -H 'content-type: application/json' -d '{{"kind":"allow_host","host":"pypi.org","why":"pip install requests"}}'

    wget -q -O - -Y off --header 'content-type: application/json' --post-data '{{"kind":"question","text":"Which branch should I push to?"}}' "$BOTTLE_SUPERVISE_URL/v1/requests?wait={MAX_WAIT}"
"#
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_guide_names_the_api_and_the_url() {
        let t = super::text(Some("http://10.0.0.2:7777"));
        assert!(t.contains("`http://10.0.0.2:7777`"));
        for needle in [
            "POST /v1/requests",
            "GET /v1/requests/ID",
            "allow_dlp",
            "curl -sS",
            "wget -q",
        ] {
            assert!(t.contains(needle), "{needle}");
        }
        assert!(!super::text(None).contains("(here"));
    }
}
