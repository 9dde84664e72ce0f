//! Generated secrets of every built-in kind, each embedded in a carrier an agent would send.
#![allow(dead_code)]

use super::kit::{
    ALNUM, ALNUM_US, B64, DIGITS, HEX, Item, Rng, UPPER_NUM, b64, b64url, json_str, urlencode, uuid,
};

/// A secret as generated, by where it can go.
enum Secret {
    /// A token that can sit anywhere: a header, a query, a line, a sentence.
    Token(String),
    /// A URL that carries its credential.
    Url(String),
    /// Several lines (a PEM key, a key file).
    Block(String),
    /// One line that holds its own context (an assignment, a connection string).
    Line(String),
    /// A header value whole.
    Header(String),
    /// A value for a credential-looking field name.
    Field(&'static str, String),
}

type Make = fn(&mut Rng) -> Secret;

fn tok(prefix: &str, r: &mut Rng, alphabet: &str, n: usize) -> Secret {
    Secret::Token(format!("{prefix}{}", r.pick(alphabet, n)))
}

const BASE32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BECH32: &str = "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L";

fn pem(r: &mut Rng) -> String {
    let kind = *r.choose(&[
        "RSA PRIVATE KEY",
        "EC PRIVATE KEY",
        "DSA PRIVATE KEY",
        "OPENSSH PRIVATE KEY",
        "PRIVATE KEY",
        "ENCRYPTED PRIVATE KEY",
    ]);
    let lead = match kind {
        "OPENSSH PRIVATE KEY" => "b3BlbnNzaC1rZXktdjEAAAAA",
        "EC PRIVATE KEY" => "MHcCAQEEI",
        _ => "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    };
    let lines: Vec<String> = (0..r.below(20) + 6).map(|_| r.pick(B64, 64)).collect();
    format!(
        "-----BEGIN {kind}-----\n{lead}{}\n-----END {kind}-----\n",
        lines.join("\n")
    )
}

fn jwt(r: &mut Rng) -> String {
    let alg = *r.choose(&["HS256", "RS256", "ES256", "EdDSA"]);
    let header = format!(
        r#"{{"alg":"{alg}","typ":"JWT","kid":"{}"}}"#,
        r.pick(HEX, 16)
    );
    let payload = format!(
        r#"{{"sub":"{}","iss":"https://auth.example.com/","aud":"api","iat":{},"exp":{},"scope":"read write"}}"#,
        uuid(r),
        1_700_000_000 + r.below(50_000_000),
        1_750_000_000 + r.below(50_000_000)
    );
    format!(
        "{}.{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes()),
        b64url(&r.bytes(64))
    )
}

fn service_account(r: &mut Rng) -> String {
    let key = pem(r).replace("RSA PRIVATE KEY", "PRIVATE KEY");
    format!(
        "{{\n  \"type\": \"service_account\",\n  \"project_id\": \"proj-{}\",\n  \"private_key_id\": \"{}\",\n  \"private_key\": {},\n  \"client_email\": \"ci@proj.iam.gserviceaccount.com\"\n}}\n",
        r.pick(DIGITS, 6),
        r.pick(HEX, 40),
        json_str(&key)
    )
}

const KINDS: &[(&str, Make)] = &[
    ("anthropic-api-key", |r| {
        Secret::Token(format!("sk-ant-api03-{}AA", r.pick(ALNUM_US, 93)))
    }),
    ("anthropic-oauth-token", |r| {
        Secret::Token(format!("sk-ant-oat01-{}AA", r.pick(ALNUM_US, 93)))
    }),
    ("openai-api-key", |r| match r.below(3) {
        0 => Secret::Token(format!(
            "sk-proj-{}T3BlbkFJ{}",
            r.pick(ALNUM_US, 74),
            r.pick(ALNUM_US, 74)
        )),
        1 => Secret::Token(format!(
            "sk-{}T3BlbkFJ{}",
            r.pick(ALNUM, 20),
            r.pick(ALNUM, 20)
        )),
        _ => Secret::Token(format!("sk-svcacct-{}", r.pick(ALNUM_US, 150))),
    }),
    ("aws-access-key-id", |r| {
        let prefix = *r.choose(&["AKIA", "ASIA"]);
        tok(prefix, r, BASE32, 16)
    }),
    ("aws-secret-access-key", |r| {
        let v = r.pick(B64, 40);
        Secret::Line(match r.below(4) {
            0 => format!("aws_secret_access_key = {v}"),
            1 => format!("AWS_SECRET_ACCESS_KEY={v}"),
            2 => format!("\"SecretAccessKey\": \"{v}\""),
            _ => format!("aws_secret_key: \"{v}\""),
        })
    }),
    ("github-pat", |r| tok("ghp_", r, ALNUM, 36)),
    ("github-oauth-token", |r| tok("gho_", r, ALNUM, 36)),
    ("github-app-token", |r| {
        let prefix = *r.choose(&["ghu_", "ghs_"]);
        tok(prefix, r, ALNUM, 36)
    }),
    ("github-refresh-token", |r| tok("ghr_", r, ALNUM, 76)),
    ("github-fine-grained-pat", |r| {
        Secret::Token(format!(
            "github_pat_{}_{}",
            r.pick(ALNUM, 22),
            r.pick(ALNUM, 59)
        ))
    }),
    ("gitlab-pat", |r| tok("glpat-", r, ALNUM_US, 20)),
    ("gitlab-token", |r| match r.below(3) {
        0 => tok("glptt-", r, HEX, 40),
        1 => tok("glrt-", r, ALNUM_US, 20),
        _ => tok("gldt-", r, ALNUM_US, 20),
    }),
    ("slack-token", |r| match r.below(2) {
        0 => Secret::Token(format!(
            "xoxb-{}-{}-{}",
            r.pick(DIGITS, 12),
            r.pick(DIGITS, 13),
            r.pick(ALNUM, 24)
        )),
        _ => Secret::Token(format!(
            "xoxp-{}-{}-{}-{}",
            r.pick(DIGITS, 11),
            r.pick(DIGITS, 12),
            r.pick(DIGITS, 13),
            r.pick(HEX, 32)
        )),
    }),
    ("slack-webhook", |r| {
        Secret::Url(format!(
            "https://hooks.slack.com/services/T{}/B{}/{}",
            r.pick(UPPER_NUM, 10),
            r.pick(UPPER_NUM, 10),
            r.pick(ALNUM, 24)
        ))
    }),
    ("stripe-secret-key", |r| {
        let prefix = *r.choose(&["sk_live_", "sk_test_"]);
        tok(prefix, r, ALNUM, 99)
    }),
    ("stripe-restricted-key", |r| tok("rk_live_", r, ALNUM, 99)),
    ("stripe-webhook-secret", |r| tok("whsec_", r, ALNUM, 32)),
    ("google-api-key", |r| tok("AIza", r, ALNUM_US, 35)),
    ("google-oauth-client-secret", |r| {
        tok("GOCSPX-", r, ALNUM_US, 28)
    }),
    ("google-oauth-token", |r| tok("ya29.", r, ALNUM_US, 180)),
    ("gcp-service-account-key", |r| {
        Secret::Block(service_account(r))
    }),
    ("private-key", |r| Secret::Block(pem(r))),
    ("jwt", |r| Secret::Token(jwt(r))),
    ("azure-storage-account-key", |r| {
        Secret::Line(format!(
            "DefaultEndpointsProtocol=https;AccountName=st{};AccountKey={}==;EndpointSuffix=core.windows.net",
            r.pick(DIGITS, 6),
            r.pick(B64, 86)
        ))
    }),
    ("azure-shared-access-key", |r| {
        Secret::Line(format!(
            "Endpoint=sb://ns{}.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={}=",
            r.pick(DIGITS, 4),
            r.pick(B64, 43)
        ))
    }),
    ("azure-ad-client-secret", |r| {
        Secret::Token(format!(
            "{}{}Q~{}",
            r.pick(ALNUM, 3),
            r.below(10),
            r.pick(ALNUM_US, 34)
        ))
    }),
    ("digitalocean-token", |r| tok("dop_v1_", r, HEX, 64)),
    ("heroku-api-key", |r| match r.below(2) {
        0 => tok("HRKU-AA", r, ALNUM_US, 58),
        _ => Secret::Line(format!("HEROKU_API_KEY={}", uuid(r))),
    }),
    ("npm-token", |r| tok("npm_", r, ALNUM, 36)),
    ("pypi-token", |r| {
        tok("pypi-AgEIcHlwaS5vcmc", r, ALNUM_US, 150)
    }),
    ("huggingface-token", |r| {
        tok(
            "hf_",
            r,
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            34,
        )
    }),
    ("sendgrid-api-key", |r| {
        Secret::Token(format!(
            "SG.{}.{}",
            r.pick(ALNUM_US, 22),
            r.pick(ALNUM_US, 43)
        ))
    }),
    ("shopify-token", |r| tok("shpat_", r, HEX, 32)),
    ("docker-hub-token", |r| tok("dckr_pat_", r, ALNUM_US, 27)),
    ("vault-token", |r| tok("hvs.", r, ALNUM_US, 90)),
    ("terraform-cloud-token", |r| {
        Secret::Token(format!(
            "{}.atlasv1.{}",
            r.pick(ALNUM, 14),
            r.pick(ALNUM_US, 67)
        ))
    }),
    ("databricks-token", |r| tok("dapi", r, HEX, 32)),
    ("groq-api-key", |r| tok("gsk_", r, ALNUM, 52)),
    ("xai-api-key", |r| tok("xai-", r, ALNUM, 80)),
    ("replicate-token", |r| tok("r8_", r, ALNUM, 37)),
    ("linear-api-key", |r| tok("lin_api_", r, ALNUM, 40)),
    ("postman-api-key", |r| {
        Secret::Token(format!("PMAK-{}-{}", r.pick(HEX, 24), r.pick(HEX, 34)))
    }),
    ("age-secret-key", |r| tok("AGE-SECRET-KEY-1", r, BECH32, 58)),
    ("doppler-token", |r| tok("dp.st.", r, ALNUM, 43)),
    ("sentry-token", |r| tok("sntryu_", r, HEX, 64)),
    ("grafana-token", |r| {
        Secret::Token(format!("glsa_{}_{}", r.pick(ALNUM, 32), r.pick(HEX, 8)))
    }),
    ("url-password", |r| {
        let host = *r.choose(&[
            "db.internal:5432",
            "git.example.com",
            "redis.example.net:6379",
            "mq.example.org",
        ]);
        let scheme = *r.choose(&["postgres", "https", "redis", "amqp"]);
        Secret::Url(format!(
            "{scheme}://svc_user:{}@{host}/app",
            r.pick(
                "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.~",
                20
            )
        ))
    }),
    ("authorization-header", |r| match r.below(2) {
        0 => Secret::Header(format!("Authorization: Bearer {}", r.pick(ALNUM_US, 48))),
        _ => Secret::Header(format!(
            "Authorization: Basic {}",
            b64(format!("deploy:{}", r.pick(ALNUM, 20)).as_bytes())
        )),
    }),
    ("credential-field", |r| {
        let name = *r.choose(&[
            "api_key",
            "apiKey",
            "client_secret",
            "DB_PASSWORD",
            "access_token",
            "auth_token",
            "SECRET_KEY",
            "refresh_token",
            "webhook_secret",
            "signing_key",
            "MYSQL_ROOT_PASSWORD",
            "session_secret",
            "MAILGUN_API_KEY",
            "DATADOG_API_KEY",
            "ALGOLIA_ADMIN_KEY",
            "x-api-key",
            "private_token",
            "encryption_key",
            "clientSecret",
            "password",
        ]);
        let len = r.below(28);
        let hex_len = *r.choose(&[32, 40, 64]);
        let value = match r.below(4) {
            0 => r.pick(ALNUM, 20 + len),
            1 => r.pick(HEX, hex_len),
            2 => r.pick(B64, 40),
            _ => r.pick(
                "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!@#%^*-_",
                16 + len % 9,
            ),
        };
        Secret::Field(name, value)
    }),
];

fn chat(text: &str) -> Item {
    Item::body(format!(
        r#"{{"model":"claude-sonnet-4-5","max_tokens":4096,"messages":[{{"role":"user","content":[{{"type":"text","text":{}}}]}}],"stream":true}}"#,
        json_str(text)
    ))
}

fn tool_result(text: &str) -> Item {
    Item::body(format!(
        r#"{{"model":"claude-sonnet-4-5","messages":[{{"role":"user","content":[{{"type":"tool_result","tool_use_id":"toolu_01{}","content":{}}}]}}]}}"#,
        "A1b2C3d4E5f6G7h8J9k0Lm",
        json_str(text)
    ))
}

fn token_carrier(t: &str, n: usize) -> Item {
    match n % 10 {
        0 => chat(&format!(
            "Here is my config, the key is {t} — why does the request fail?"
        )),
        1 => Item::Value(format!("Authorization: Bearer {t}")),
        2 => Item::Value(format!("x-api-key: {t}")),
        3 => Item::Value(format!(
            "/v1/resources?page=2&api_key={}&sort=desc",
            urlencode(t)
        )),
        4 => Item::body(format!(
            "# local development\nRUST_LOG=debug\nSERVICE_TOKEN={t}\nPORT=8080\n"
        )),
        5 => tool_result(&format!(
            "import client\n\nc = client.Client(\n    api_key=\"{t}\",\n    timeout=30,\n)\nprint(c.me())\n"
        )),
        6 => Item::body(format!(
            "services:\n  api:\n    image: api:1.4\n    environment:\n      - UPSTREAM_TOKEN={t}\n"
        )),
        7 => Item::body(format!(
            "grant_type=client_credentials&client_id=ci-bot&client_secret={}",
            urlencode(t)
        )),
        8 => Item::body(format!(
            r#"{{"type":"tool_use","id":"toolu_01X","name":"bash","input":{{"command":{}}}}}"#,
            json_str(&format!(
                "curl -sS -H 'Authorization: Bearer {t}' https://api.example.com/v2/me"
            ))
        )),
        _ => Item::body(format!(
            "I rotated the credential; the new one is {t}. Please update the CI settings.\n"
        )),
    }
}

fn url_carrier(u: &str, n: usize) -> Item {
    match n % 4 {
        0 => Item::Value(format!("/fetch?target={}", urlencode(u))),
        1 => chat(&format!("The job posts to {u} and gets a 403, any idea?")),
        2 => Item::body(format!("WEBHOOK_URL={u}\nTIMEOUT=30\n")),
        _ => tool_result(&format!(
            "requests.post(\"{u}\", json={{\"text\": \"deploy done\"}})\n"
        )),
    }
}

fn text_carrier(text: &str, n: usize) -> Item {
    match n % 3 {
        0 => chat(&format!("Can you check this file?\n\n{text}\n")),
        1 => Item::body(text.to_string()),
        _ => tool_result(&format!("$ cat ./config/local\n{text}\n")),
    }
}

fn field_carrier(name: &str, value: &str, n: usize) -> Item {
    let header_name = name.replace('_', "-");
    match n % 8 {
        0 => Item::body(format!(
            r#"{{"name":"ci","{name}":"{value}","enabled":true}}"#
        )),
        1 => Item::body(format!("HOME=/home/agent\n{name}={value}\n")),
        2 => Item::Value(format!("/api/v1/login?user=ci&{name}={}", urlencode(value))),
        3 => Item::Value(format!("{header_name}: {value}")),
        4 => Item::body(format!("database:\n  host: db\n  {name}: {value}\n")),
        5 => Item::body(format!("user=ci&{name}={}&remember=1", urlencode(value))),
        6 => Item::body(format!(
            "[service]\nurl = \"https://api.example.com\"\n{name} = \"{value}\"\n"
        )),
        _ => tool_result(&format!(
            "conn = connect(host=\"db\", {name}=\"{value}\")\n"
        )),
    }
}

fn carry(secret: &Secret, n: usize) -> Item {
    match secret {
        Secret::Token(t) => token_carrier(t, n),
        Secret::Url(u) => url_carrier(u, n),
        Secret::Block(b) | Secret::Line(b) => text_carrier(b, n),
        Secret::Header(h) => Item::Value(h.clone()),
        Secret::Field(name, value) => field_carrier(name, value, n),
    }
}

/// Six secrets of every kind (twenty credential fields), each in a carrier of its own turn.
pub fn all(r: &mut Rng) -> Vec<(&'static str, Item)> {
    let mut out = Vec::new();
    let mut n = 0;
    for (rule, make) in KINDS {
        let count = if *rule == "credential-field" { 24 } else { 6 };
        for _ in 0..count {
            let secret = make(r);
            out.push((*rule, carry(&secret, n)));
            n += 1;
        }
    }
    out
}

/// One secret of a built-in kind as a run test plants it in a real request: where it can go.
pub struct Planted {
    pub rule: &'static str,
    /// The secret itself, as generated.
    pub secret: String,
    /// A query parameter (`name=value`, percent-encoded), when the secret fits in a URL.
    pub query: Option<String>,
    /// A whole header line (`Name: value`), when the secret is one line.
    pub header: Option<String>,
    /// A body holding it.
    pub body: String,
}

/// One secret of every built-in kind, with the places it can go in a request.
pub fn one_per_rule(r: &mut Rng) -> Vec<Planted> {
    let mut out = Vec::new();
    for (rule, make) in KINDS {
        let p = match make(r) {
            Secret::Token(t) => Planted {
                rule,
                secret: t.clone(),
                query: Some(format!("note={}", urlencode(&t))),
                header: Some(format!("X-Note: {t}")),
                body: format!("{{\"note\": {}}}", json_str(&t)),
            },
            Secret::Url(u) => Planted {
                rule,
                secret: u.clone(),
                query: None,
                header: Some(format!("X-Callback: {u}")),
                body: format!("{{\"callback\": {}}}", json_str(&u)),
            },
            Secret::Block(b) => Planted {
                rule,
                secret: b.clone(),
                query: None,
                header: None,
                body: b,
            },
            Secret::Line(l) => Planted {
                rule,
                secret: l.clone(),
                query: None,
                header: None,
                body: format!("{l}\n"),
            },
            Secret::Header(h) => Planted {
                rule,
                secret: h.clone(),
                query: None,
                header: Some(h.clone()),
                body: format!("{h}\n"),
            },
            Secret::Field(name, value) => Planted {
                rule,
                secret: value.clone(),
                query: Some(format!("{name}={}", urlencode(&value))),
                header: None,
                body: format!("{{\"{name}\": {}}}", json_str(&value)),
            },
        };
        out.push(p);
    }
    out
}

/// Six secrets of every kind that fits a header, each split in the middle over two headers
/// (`(name, value)` pairs, in the order sent): a token under `x-note-a` and `x-note-b`; a
/// header value under its own name, then `x-more`; a field under `x-NAME`, then `x-more`.
/// Multi-line secrets (PEM blocks) fit no header and are left out.
pub fn split_headers(r: &mut Rng) -> Vec<(&'static str, Vec<(String, String)>)> {
    let mut out = Vec::new();
    for (rule, make) in KINDS {
        for _ in 0..6 {
            let (first, value, second) = match make(r) {
                Secret::Token(t) => ("x-note-a".to_string(), t, "x-note-b"),
                Secret::Url(u) => ("x-callback".to_string(), u, "x-more"),
                Secret::Line(l) => ("x-note".to_string(), l, "x-more"),
                Secret::Header(h) => {
                    let (name, value) = h.split_once(": ").expect("Name: value");
                    (name.to_ascii_lowercase(), value.to_string(), "x-more")
                }
                Secret::Field(name, value) => (
                    format!("x-{}", name.replace('_', "-").to_ascii_lowercase()),
                    value,
                    "x-more",
                ),
                Secret::Block(_) => continue,
            };
            let mut mid = value.len() / 2;
            while !value.is_char_boundary(mid) {
                mid += 1;
            }
            out.push((
                *rule,
                vec![
                    (first, value[..mid].to_string()),
                    (second.to_string(), value[mid..].to_string()),
                ],
            ));
        }
    }
    out
}
