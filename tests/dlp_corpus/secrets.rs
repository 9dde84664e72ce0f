//! Generated secrets of every built-in kind: what the DLP corpus embeds in carriers
//! (`carriers.rs`) and the traffic test plants in requests (`planted.rs`).

use super::kit::{ALNUM, ALNUM_US, B64, DIGITS, HEX, Rng, UPPER_NUM, b64, b64url, json_str, uuid};

/// A secret as generated, by where it can go.
pub enum Secret {
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

pub type Make = fn(&mut Rng) -> Secret;

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

pub const KINDS: &[(&str, Make)] = &[
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
