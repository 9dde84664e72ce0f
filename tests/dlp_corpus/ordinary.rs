//! Ordinary traffic: this repository's text files, and generated API bodies, headers and URLs
//! full of the random-looking things that are not credentials.

use std::path::Path;

use super::carriers::Item;
use super::kit::{ALNUM, ALNUM_US, B64, DIGITS, HEX, Rng, b64, b64url, json_str, uuid};

/// Every text file under `root` (sources, docs, Cargo.lock, scripts, recipes), as sent raw and
/// as an agent sends a file to a model: inside a chat request.
fn repository(root: &Path) -> Vec<(String, Item)> {
    let mut out = Vec::new();
    let walk = walkdir::WalkDir::new(root).into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        let hidden = name.starts_with('.') && e.depth() > 0 && name != ".ci" && name != ".cargo";
        // Not the repository's: build output, the default store, files scripts/setup fetched.
        let local =
            e.depth() == 1 && (name == "cache" || name.starts_with("target")) || name == "fetched";
        !hidden && !local
    });
    for entry in walk
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
    {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        if bytes.len() > 4 << 20 || bytes.contains(&0) {
            continue;
        }
        let Ok(text) = String::from_utf8(bytes) else {
            continue;
        };
        let name = entry
            .path()
            .strip_prefix(root)
            .unwrap_or(entry.path())
            .display()
            .to_string();
        let wrapped = format!(
            r#"{{"model":"claude-sonnet-4-5","messages":[{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01Hq","content":{}}}]}}]}}"#,
            json_str(&text)
        );
        out.push((name.clone(), Item::body(wrapped)));
        out.push((name, Item::Body(text.into_bytes())));
    }
    out
}

fn timestamp(r: &mut Rng) -> String {
    format!(
        "2024-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        1 + r.below(12),
        1 + r.below(28),
        r.below(24),
        r.below(60),
        r.below(60),
        r.below(1000)
    )
}

fn sha(r: &mut Rng) -> String {
    r.pick(HEX, 40)
}

fn github_commit(r: &mut Rng) -> String {
    let (commit, tree, parent) = (sha(r), sha(r), sha(r));
    let signature = format!(
        "-----BEGIN PGP SIGNATURE-----\n\n{}\n{}\n=ab12\n-----END PGP SIGNATURE-----",
        r.pick(B64, 64),
        r.pick(B64, 40)
    );
    format!(
        r#"{{"sha":"{commit}","node_id":"C_kwDO{}","commit":{{"author":{{"name":"Ada","email":"ada@example.com","date":"{}"}},"message":"Fix token refresh race in the session cache","tree":{{"sha":"{tree}","url":"https://api.github.com/repos/acme/app/git/trees/{tree}"}},"verification":{{"verified":true,"reason":"valid","signature":{},"payload":"tree {tree}\nparent {parent}\n"}}}},"url":"https://api.github.com/repos/acme/app/commits/{commit}","parents":[{{"sha":"{parent}"}}],"stats":{{"additions":{},"deletions":{}}}}}"#,
        r.pick(ALNUM, 20),
        timestamp(r),
        json_str(&signature),
        r.below(500),
        r.below(500)
    )
}

fn package_lock(r: &mut Rng) -> String {
    let entries: Vec<String> = (0..8)
        .map(|i| {
            let v = format!("{}.{}.{}", r.below(20), r.below(30), r.below(40));
            format!(
                r#""node_modules/pkg-{i}":{{"version":"{v}","resolved":"https://registry.npmjs.org/pkg-{i}/-/pkg-{i}-{v}.tgz","integrity":"sha512-{}==","license":"MIT"}}"#,
                r.pick(B64, 86)
            )
        })
        .collect();
    format!(
        r#"{{"name":"app","lockfileVersion":3,"packages":{{{}}}}}"#,
        entries.join(",")
    )
}

fn image_upload(r: &mut Rng) -> String {
    let len = 8 * 1024 + r.below(56 * 1024);
    let data = b64(&r.bytes(len));
    format!(
        r#"{{"model":"claude-sonnet-4-5","messages":[{{"role":"user","content":[{{"type":"image","source":{{"type":"base64","media_type":"image/png","data":"{data}"}}}},{{"type":"text","text":"What does this screenshot show?"}}]}}]}}"#
    )
}

fn telemetry(r: &mut Rng) -> String {
    let events: Vec<String> = (0..6)
        .map(|_| {
            format!(
                r#"{{"event_id":"{}","timestamp":"{}","session_id":"{}","trace_id":"{}","span_id":"{}","device_id":"{}","name":"tool_call","props":{{"duration_ms":{},"file_hash":"{}","token_count":{}}}}}"#,
                uuid(r),
                timestamp(r),
                uuid(r),
                r.pick(HEX, 32),
                r.pick(HEX, 16),
                r.pick(HEX, 64),
                r.below(5000),
                sha(r),
                r.below(100_000)
            )
        })
        .collect();
    format!(
        r#"{{"batch":[{}],"sent_at":"{}"}}"#,
        events.join(","),
        timestamp(r)
    )
}

fn chat_with_ids(r: &mut Rng) -> String {
    format!(
        r#"{{"model":"claude-opus-4-1","max_tokens":8192,"metadata":{{"user_id":"user_{}_account_{}_session_{}"}},"messages":[{{"role":"assistant","content":[{{"type":"tool_use","id":"toolu_01{}","name":"bash","input":{{"command":"git log --oneline -5 && sha256sum dist/app.tar"}}}}]}},{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01{}","content":"{} Fix the tokenizer\n{} Add secret scanning docs\n{}  dist/app.tar"}}]}}]}}"#,
        r.pick(HEX, 64),
        uuid(r),
        uuid(r),
        r.pick(ALNUM, 22),
        r.pick(ALNUM, 22),
        r.pick(HEX, 7),
        r.pick(HEX, 7),
        r.pick(HEX, 64)
    )
}

fn oauth_and_oci(r: &mut Rng) -> String {
    match r.below(3) {
        0 => format!(
            r#"{{"token_type":"Bearer","expires_in":3600,"scope":"repo read:org","token_endpoint":"https://auth.example.com/oauth/token","state":"{}","nonce":"{}"}}"#,
            uuid(r),
            r.pick(HEX, 32)
        ),
        1 => format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"digest":"sha256:{}","size":{}}},"layers":[{{"digest":"sha256:{}","size":{}}}],"annotations":{{"org.opencontainers.image.revision":"{}"}}}}"#,
            r.pick(HEX, 64),
            r.below(9000),
            r.pick(HEX, 64),
            r.below(90_000_000),
            sha(r)
        ),
        _ => format!(
            r#"{{"etag":"\"{}\"","content_md5":"{}","checksum_sha256":"{}","version_id":"{}","last_modified":"{}","next_page_token":"{}","request_id":"{}"}}"#,
            r.pick(HEX, 32),
            b64(&r.bytes(16)),
            b64(&r.bytes(32)),
            r.pick(ALNUM_US, 32),
            timestamp(r),
            r.pick(ALNUM_US, 40),
            uuid(r)
        ),
    }
}

fn env_and_config(r: &mut Rng) -> String {
    format!(
        "HOSTNAME={}\nHOME=/home/agent\nPATH=/usr/local/bin:/usr/bin:/bin\nRUST_LOG=info\nTERM=xterm-256color\nGIT_COMMIT={}\nBUILD_ID={}\nCACHE_KEY=v2-{}\nAWS_REGION=eu-west-1\nGITHUB_TOKEN=egress-placeholder\nANTHROPIC_API_KEY=egress-placeholder\nMAX_TOKENS=4096\nTOKENIZER=cl100k_base\n",
        r.pick(HEX, 12),
        sha(r),
        uuid(r),
        r.pick(HEX, 16)
    )
}

fn form(r: &mut Rng) -> String {
    format!(
        "q=rust+async+runtime&page={}&per_page=50&sort=updated&state=open&page_token={}&since={}&sha={}&csrf_token={}",
        r.below(9),
        r.pick(ALNUM_US, 40),
        timestamp(r),
        sha(r),
        r.pick(ALNUM, 32)
    )
}

fn headers(r: &mut Rng) -> Vec<String> {
    vec![
        format!("x-request-id: {}", uuid(r)),
        format!("If-None-Match: W/\"{}\"", r.pick(HEX, 40)),
        format!(
            "Cookie: _ga=GA1.2.{}.{}; theme=dark; _gid=GA1.2.{}",
            r.pick(DIGITS, 10),
            r.pick(DIGITS, 10),
            r.pick(DIGITS, 9)
        ),
        format!("traceparent: 00-{}-{}-01", r.pick(HEX, 32), r.pick(HEX, 16)),
        format!(
            "User-Agent: claude-cli/1.0.{} (external, cli)",
            r.below(100)
        ),
        "anthropic-version: 2023-06-01".into(),
        "Authorization: Bearer egress-placeholder".into(),
        "x-api-key: egress-placeholder".into(),
        format!("x-amz-content-sha256: {}", r.pick(HEX, 64)),
        format!("Content-MD5: {}", b64(&r.bytes(16))),
        format!("x-stainless-retry-count: {}", r.below(3)),
        format!(
            "X-GitHub-Request-Id: {}:{}:{}",
            r.pick("ABCDEF0123456789", 4),
            r.pick("ABCDEF0123456789", 6),
            r.pick("ABCDEF0123456789", 8)
        ),
        format!("Sec-WebSocket-Key: {}", b64(&r.bytes(16))),
        format!("Idempotency-Key: {}", uuid(r)),
    ]
}

/// A GitHub release download's redirect (an Azure SAS with GitHub's own JWT), an S3 presigned
/// URL with temporary credentials: signed URLs, whose credentials are their grant.
fn signed_urls(r: &mut Rng) -> Vec<String> {
    let header = b64url(br#"{"typ":"JWT","alg":"HS256"}"#);
    let claims = format!(
        r#"{{"iss":"github.com","aud":"release-assets.githubusercontent.com","key":"key1","exp":{},"nbf":{},"path":"releaseassetproduction.blob.core.windows.net"}}"#,
        1_764_168_275 + r.below(1_000_000),
        1_764_167_975 + r.below(1_000_000)
    );
    let jwt = format!(
        "{header}.{}.{}",
        b64url(claims.as_bytes()),
        b64url(&r.bytes(32))
    );
    let sig = b64(&r.bytes(32))
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    vec![
        format!(
            "https://release-assets.githubusercontent.com/github-production-release-asset/{}/{}?sp=r&sv=2018-11-09&sr=b&spr=https&se=2025-11-26T15%3A13%3A33Z&rscd=attachment%3B+filename%3Dtool-linux-amd64.tar.gz&rsct=application%2Foctet-stream&skoid={}&sktid={}&skt=2025-11-26T14%3A12%3A46Z&ske=2025-11-26T15%3A13%3A33Z&sks=b&skv=2018-11-09&sig={sig}&jwt={jwt}&filename=tool-linux-amd64.tar.gz&response-content-disposition=attachment%3B%20filename%3Dtool-linux-amd64.tar.gz&response-content-type=application%2Foctet-stream",
            r.pick(DIGITS, 9),
            uuid(r),
            uuid(r),
            uuid(r)
        ),
        format!(
            "https://productionresultssa{}.blob.core.windows.net/actions-results/{}/workflow-job-run-{}/logs/job/job-logs.txt?rsct=text%2Fplain&se=2025-01-01T00%3A00%3A00Z&sig={sig}&ske=2025-01-01T00%3A00%3A00Z&skoid={}&sks=b&skt=2024-12-31T00%3A00%3A00Z&sktid={}&skv=2024-11-04&sp=r&spr=https&sr=b&st=2024-12-31T23%3A50%3A00Z&sv=2024-11-04",
            r.below(20),
            uuid(r),
            uuid(r),
            uuid(r),
            uuid(r)
        ),
        format!(
            "https://bucket.s3.amazonaws.com/builds/app.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIA{}%2F20240718%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240718T144553Z&X-Amz-Expires=300&X-Amz-Security-Token={}&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
            r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
            b64(&r.bytes(300))
                .replace('+', "%2B")
                .replace('/', "%2F")
                .replace('=', "%3D"),
            r.pick(HEX, 64)
        ),
    ]
}

fn urls(r: &mut Rng) -> Vec<String> {
    vec![
        format!(
            "/repos/acme/app/commits?sha={}&per_page=100&page={}",
            sha(r),
            r.below(9)
        ),
        format!(
            "https://registry.npmjs.org/pkg/-/pkg-1.{}.0.tgz",
            r.below(30)
        ),
        format!(
            "/v1/files/{}/content?download=true&version={}",
            uuid(r),
            r.pick(ALNUM_US, 24)
        ),
        format!(
            "/search?q=token+refresh+secret&cursor={}&limit=20",
            b64url(&r.bytes(24))
        ),
        format!(
            "https://objects.githubusercontent.com/github-production-release-asset/{}/{}?response-content-disposition=attachment",
            r.pick(DIGITS, 9),
            uuid(r)
        ),
        format!(
            "/api/v2/jobs/{}/logs?since={}&session_id={}",
            r.pick(DIGITS, 8),
            timestamp(r),
            uuid(r)
        ),
        format!(
            "https://crates.io/api/v1/crates/regex/1.{}.{}/download",
            r.below(12),
            r.below(9)
        ),
        format!(
            "/oauth/authorize?response_type=code&client_id={}&state={}&redirect_uri=http%3A%2F%2Flocalhost%3A8080%2Fcallback",
            r.pick(ALNUM, 20),
            r.pick(HEX, 32)
        ),
    ]
}

/// The repository's files and ~2,500 generated bodies and values, each with where it came
/// from.
pub fn all(root: &Path, r: &mut Rng) -> Vec<(String, Item)> {
    let mut out = repository(root);
    type Gen = fn(&mut Rng) -> String;
    let gens: [(&str, Gen, usize); 8] = [
        ("github commit", github_commit, 250),
        ("package-lock", package_lock, 150),
        ("image upload", image_upload, 60),
        ("telemetry", telemetry, 250),
        ("chat with ids", chat_with_ids, 250),
        ("oauth/oci/etag", oauth_and_oci, 250),
        ("env and config", env_and_config, 150),
        ("form", form, 200),
    ];
    for (source, generate, count) in gens {
        for _ in 0..count {
            out.push((source.to_string(), Item::body(generate(r))));
        }
    }
    for _ in 0..40 {
        out.extend(
            headers(r)
                .into_iter()
                .map(|h| ("header".to_string(), Item::Value(h))),
        );
        out.extend(
            urls(r)
                .into_iter()
                .map(|u| ("url".to_string(), Item::Url(u))),
        );
        for u in signed_urls(r) {
            let curl = format!(
                "$ curl -sSLv https://github.com/acme/tool/releases/download/v1.2.0/tool.tar.gz\n< HTTP/2 302\n< location: {u}\n< HTTP/2 200\n"
            );
            out.push((
                "signed url in a tool result".to_string(),
                Item::body(format!(r#"{{"content":{}}}"#, json_str(&curl))),
            ));
            out.push(("signed url".to_string(), Item::Url(u)));
        }
    }
    out
}

/// `n` requests' ordinary headers, each a set sent together.
pub fn header_sets(r: &mut Rng, n: usize) -> Vec<Vec<String>> {
    (0..n).map(|_| headers(r)).collect()
}
