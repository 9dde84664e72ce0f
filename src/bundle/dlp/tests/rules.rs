//! Each rule: secrets it must find (with the rule's id) and near misses it must leave alone.

use super::*;

pub(super) struct Case {
    pub id: &'static str,
    pub hits: Vec<String>,
    pub misses: Vec<String>,
}

fn case(id: &'static str, hits: Vec<String>, misses: Vec<String>) -> Case {
    Case { id, hits, misses }
}

pub(super) fn jwt(rng: &mut Rng, header: &str) -> String {
    let payload = format!(
        r#"{{"sub":"{}","iat":{},"exp":{}}}"#,
        uuid(rng),
        1_700_000_000,
        1_800_000_000
    );
    format!(
        "{}.{}.{}",
        b64url(header.as_bytes()),
        b64url(payload.as_bytes()),
        b64url(&rng.bytes(32))
    )
}

fn pem(rng: &mut Rng, kind: &str) -> String {
    let lines: Vec<String> = (0..4).map(|_| rng.pick(B64, 64)).collect();
    format!(
        "-----BEGIN {kind}-----\n{}\n-----END {kind}-----\n",
        lines.join("\n")
    )
}

/// Tokens whose shape is a prefix and a run of one alphabet: AI, code hosting, chat, payments.
fn prefixed(rng: &mut Rng) -> Vec<Case> {
    let r = rng;
    vec![
        case(
            "anthropic-api-key",
            vec![
                format!("sk-ant-api03-{}AA", r.pick(ALNUM_US, 93)),
                format!("sk-ant-admin01-{}AA", r.pick(ALNUM_US, 93)),
            ],
            vec![
                format!("sk-ant-api03-{}", r.pick(ALNUM, 12)),
                "sk-ant-api03-...".into(),
            ],
        ),
        case(
            "anthropic-oauth-token",
            vec![
                format!("sk-ant-oat01-{}AA", r.pick(ALNUM_US, 93)),
                format!("sk-ant-ort01-{}AA", r.pick(ALNUM_US, 93)),
            ],
            vec![format!("sk-ant-oat-{}", r.pick(ALNUM, 90))],
        ),
        case(
            "openai-api-key",
            vec![
                format!(
                    "sk-proj-{}T3BlbkFJ{}",
                    r.pick(ALNUM_US, 74),
                    r.pick(ALNUM_US, 74)
                ),
                format!("sk-{}T3BlbkFJ{}", r.pick(ALNUM, 20), r.pick(ALNUM, 20)),
                format!("sk-svcacct-{}", r.pick(ALNUM_US, 120)),
            ],
            vec![
                "sk-proj-your-key-here".into(),
                format!("sk-{}", r.pick(ALNUM, 48)),
            ],
        ),
        case(
            "aws-access-key-id",
            vec![
                format!("AKIA{}", r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
                format!("ASIA{}", r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
            ],
            vec![
                "AKIAIOSFODNN7EXAMPLE".into(),
                format!("AKIA{}", r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ", 12)),
                format!("XAKIA{}", r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)),
            ],
        ),
        case(
            "github-pat",
            vec![format!("ghp_{}", r.pick(ALNUM, 36))],
            vec![
                format!("ghp_{}", r.pick(ALNUM, 20)),
                format!("ghp_{}", "x".repeat(36)),
            ],
        ),
        case(
            "github-oauth-token",
            vec![format!("gho_{}", r.pick(ALNUM, 36))],
            vec![format!("gho_{}", r.pick(ALNUM, 30))],
        ),
        case(
            "github-app-token",
            vec![
                format!("ghu_{}", r.pick(ALNUM, 36)),
                format!("ghs_{}", r.pick(ALNUM, 36)),
            ],
            vec![format!("ghs_{}", r.pick(ALNUM, 35))],
        ),
        case(
            "github-refresh-token",
            vec![format!("ghr_{}", r.pick(ALNUM, 76))],
            vec!["ghr_".into()],
        ),
        case(
            "github-fine-grained-pat",
            vec![format!(
                "github_pat_{}_{}",
                r.pick(ALNUM, 22),
                r.pick(ALNUM, 59)
            )],
            vec![
                format!("github_pat_{}", r.pick(ALNUM, 22)),
                "github_pat_token_name".into(),
            ],
        ),
        case(
            "gitlab-pat",
            vec![format!("glpat-{}", r.pick(ALNUM_US, 20))],
            vec![format!("glpat-{}", r.pick(ALNUM, 12))],
        ),
        case(
            "gitlab-token",
            vec![
                format!("glptt-{}", r.pick(HEX, 40)),
                format!("glrt-{}", r.pick(ALNUM_US, 20)),
                format!("GR1348941{}", r.pick(ALNUM_US, 20)),
            ],
            vec![
                "glrt-runner".into(),
                format!("GR1348941{}", r.pick(ALNUM, 8)),
            ],
        ),
        case(
            "slack-token",
            vec![
                format!(
                    "xoxb-{}-{}-{}",
                    r.pick("0123456789", 12),
                    r.pick("0123456789", 13),
                    r.pick(ALNUM, 24)
                ),
                format!(
                    "xoxp-{}-{}-{}-{}",
                    r.pick("0123456789", 11),
                    r.pick("0123456789", 12),
                    r.pick("0123456789", 13),
                    r.pick(HEX, 32)
                ),
                format!(
                    "xapp-1-A{}-{}-{}",
                    r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10),
                    r.pick("0123456789", 13),
                    r.pick(HEX, 64)
                ),
            ],
            vec![
                "xoxb-not-a-real-token".into(),
                format!("xoxb-{}", r.pick(ALNUM, 30)),
            ],
        ),
        case(
            "slack-webhook",
            vec![format!(
                "https://hooks.slack.com/services/T{}/B{}/{}",
                r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10),
                r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10),
                r.pick(ALNUM, 24)
            )],
            vec![
                "https://hooks.slack.com/services/".into(),
                "https://hooks.slack.com/services/T000/B000/XXXX".into(),
            ],
        ),
        case(
            "stripe-secret-key",
            vec![
                format!("sk_live_{}", r.pick(ALNUM, 99)),
                format!("sk_test_{}", r.pick(ALNUM, 24)),
            ],
            vec![
                format!("pk_live_{}", r.pick(ALNUM, 24)),
                format!("sk_live_{}", r.pick(ALNUM, 10)),
            ],
        ),
        case(
            "stripe-restricted-key",
            vec![format!("rk_live_{}", r.pick(ALNUM, 24))],
            vec![format!("rk_live_{}", r.pick(ALNUM, 10))],
        ),
        case(
            "stripe-webhook-secret",
            vec![format!("whsec_{}", r.pick(ALNUM, 32))],
            vec![format!("whsec_{}", r.pick(ALNUM, 10))],
        ),
    ]
}

/// More prefixed tokens: cloud, package registries, other services.
fn prefixed_more(rng: &mut Rng) -> Vec<Case> {
    let r = rng;
    vec![
        case(
            "google-api-key",
            vec![format!("AIza{}", r.pick(ALNUM_US, 35))],
            vec![
                format!("AIza{}", r.pick(ALNUM, 36)),
                format!("AIza{}", r.pick(ALNUM, 20)),
            ],
        ),
        case(
            "google-oauth-client-secret",
            vec![format!("GOCSPX-{}", r.pick(ALNUM_US, 28))],
            vec![format!("GOCSPX-{}", r.pick(ALNUM, 12))],
        ),
        case(
            "google-oauth-token",
            vec![format!("ya29.{}", r.pick(ALNUM_US, 150))],
            vec![format!("ya29.{}", r.pick(ALNUM, 12))],
        ),
        case(
            "digitalocean-token",
            vec![
                format!("dop_v1_{}", r.pick(HEX, 64)),
                format!("dor_v1_{}", r.pick(HEX, 64)),
            ],
            vec![format!("dop_v1_{}", r.pick(HEX, 20))],
        ),
        case(
            "npm-token",
            vec![format!("npm_{}", r.pick(ALNUM, 36))],
            vec![
                "npm_config_registry".into(),
                format!("npm_{}", r.pick(ALNUM, 40)),
            ],
        ),
        case(
            "pypi-token",
            vec![format!("pypi-AgEIcHlwaS5vcmc{}", r.pick(ALNUM_US, 120))],
            vec![format!("pypi-AgE{}", r.pick(ALNUM, 20))],
        ),
        case(
            "huggingface-token",
            vec![format!(
                "hf_{}",
                r.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", 34)
            )],
            vec!["hf_hub_download".into(), format!("hf_{}", "a".repeat(34))],
        ),
        case(
            "sendgrid-api-key",
            vec![format!(
                "SG.{}.{}",
                r.pick(ALNUM_US, 22),
                r.pick(ALNUM_US, 43)
            )],
            vec![format!("SG.{}.{}", r.pick(ALNUM, 10), r.pick(ALNUM, 10))],
        ),
        case(
            "shopify-token",
            vec![
                format!("shpat_{}", r.pick(HEX, 32)),
                format!("shpss_{}", r.pick(HEX, 32)),
            ],
            vec![format!("shpat_{}", r.pick(HEX, 16))],
        ),
        case(
            "docker-hub-token",
            vec![format!("dckr_pat_{}", r.pick(ALNUM_US, 27))],
            vec!["dckr_pat_short".into()],
        ),
        case(
            "vault-token",
            vec![format!("hvs.{}", r.pick(ALNUM_US, 90))],
            vec!["hvs.short".into()],
        ),
        case(
            "terraform-cloud-token",
            vec![format!(
                "{}.atlasv1.{}",
                r.pick(ALNUM, 14),
                r.pick(ALNUM_US, 67)
            )],
            vec!["x.atlasv1.short".into()],
        ),
        case(
            "databricks-token",
            vec![format!("dapi{}", r.pick(HEX, 32))],
            vec![
                format!("dapi{}", r.pick(HEX, 16)),
                format!("xdapi{}", r.pick(HEX, 32)),
            ],
        ),
        case(
            "groq-api-key",
            vec![format!("gsk_{}", r.pick(ALNUM, 52))],
            vec![format!("gsk_{}", r.pick(ALNUM, 20))],
        ),
        case(
            "xai-api-key",
            vec![format!("xai-{}", r.pick(ALNUM, 80))],
            vec![format!("xai-{}", r.pick(ALNUM, 20))],
        ),
        case(
            "replicate-token",
            vec![format!("r8_{}", r.pick(ALNUM, 37))],
            vec![format!("r8_{}", r.pick(ALNUM, 20))],
        ),
        case(
            "linear-api-key",
            vec![format!("lin_api_{}", r.pick(ALNUM, 40))],
            vec![format!("lin_api_{}", r.pick(ALNUM, 20))],
        ),
        case(
            "postman-api-key",
            vec![format!("PMAK-{}-{}", r.pick(HEX, 24), r.pick(HEX, 34))],
            vec![format!("PMAK-{}", r.pick(HEX, 24))],
        ),
        case(
            "age-secret-key",
            vec![format!(
                "AGE-SECRET-KEY-1{}",
                r.pick("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 58)
            )],
            vec![format!(
                "AGE-SECRET-KEY-1{}",
                r.pick("QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L", 20)
            )],
        ),
        case(
            "doppler-token",
            vec![format!("dp.pt.{}", r.pick(ALNUM, 43))],
            vec![format!("dp.pt.{}", r.pick(ALNUM, 10))],
        ),
        case(
            "sentry-token",
            vec![format!("sntryu_{}", r.pick(HEX, 64))],
            vec![format!("sntryu_{}", r.pick(HEX, 10))],
        ),
        case(
            "grafana-token",
            vec![
                format!("glsa_{}_{}", r.pick(ALNUM, 32), r.pick(HEX, 8)),
                format!("glc_{}", r.pick(B64, 100)),
            ],
            vec![format!("glsa_{}", r.pick(ALNUM, 10))],
        ),
    ]
}

/// Rules whose match holds context: a field name, a connection string, a URL, a header.
fn contextual(rng: &mut Rng) -> Vec<Case> {
    let r = rng;
    let pgp = format!(
        "-----BEGIN PGP PRIVATE KEY BLOCK-----\nVersion: GnuPG v2\n\n{}\n",
        r.pick(B64, 64)
    );
    vec![
        case(
            "aws-secret-access-key",
            vec![
                format!("aws_secret_access_key = {}", r.pick(B64, 40)),
                format!(r#"{{"SecretAccessKey": "{}"}}"#, r.pick(B64, 40)),
            ],
            vec![
                format!("checksum = {}", r.pick(B64, 40)),
                format!("aws_secret_access_key = {}", "A".repeat(40)),
            ],
        ),
        case(
            "gcp-service-account-key",
            vec![format!(
                r#"{{"type": "service_account", "private_key_id": "{}"}}"#,
                r.pick(HEX, 40)
            )],
            vec![format!(r#""private_key_id": "{}""#, r.pick(HEX, 20))],
        ),
        case(
            "private-key",
            [
                "RSA PRIVATE KEY",
                "EC PRIVATE KEY",
                "DSA PRIVATE KEY",
                "OPENSSH PRIVATE KEY",
                "PRIVATE KEY",
                "ENCRYPTED PRIVATE KEY",
            ]
            .iter()
            .map(|k| pem(r, k))
            .chain([pgp])
            .collect(),
            vec![
                "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----".into(),
                pem(r, "PUBLIC KEY"),
                pem(r, "CERTIFICATE"),
            ],
        ),
        case(
            "jwt",
            vec![
                jwt(r, r#"{"alg":"HS256","typ":"JWT"}"#),
                jwt(r, r#"{"alg":"RS256","kid":"abc"}"#),
            ],
            vec![
                jwt(r, r#"{"typ":"JWT"}"#),
                format!(
                    "eyJ{}.{}.{}",
                    r.pick(ALNUM, 20),
                    r.pick(ALNUM, 20),
                    r.pick(ALNUM, 20)
                ),
            ],
        ),
        case(
            "azure-storage-account-key",
            vec![format!(
                "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={}==;EndpointSuffix=core.windows.net",
                r.pick(B64, 86)
            )],
            vec![format!("AccountKey={}==", r.pick(B64, 40))],
        ),
        case(
            "azure-shared-access-key",
            vec![format!(
                "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=Root;SharedAccessKey={}=",
                r.pick(B64, 43)
            )],
            vec!["SharedAccessKeyName=RootManageSharedAccessKey".into()],
        ),
        case(
            "azure-ad-client-secret",
            vec![format!(
                "client secret {}{}Q~{}",
                r.pick(ALNUM, 3),
                r.below(10),
                r.pick(ALNUM_US, 34)
            )],
            vec!["abcQ~short".into()],
        ),
        case(
            "heroku-api-key",
            vec![
                format!("HRKU-AA{}", r.pick(ALNUM_US, 58)),
                format!("HEROKU_API_KEY={}", uuid(r)),
            ],
            vec![
                format!("HRKU-AA{}", r.pick(ALNUM, 20)),
                "heroku_app_name=my-app".into(),
            ],
        ),
    ]
}

/// The generic rules: a URL's password, an Authorization header, a credential-looking field.
fn generic(rng: &mut Rng) -> Vec<Case> {
    let r = rng;
    vec![
        case(
            "url-password",
            vec![format!(
                "git clone https://deploy:{}@git.example.com/x.git",
                r.pick(ALNUM, 20)
            )],
            vec![
                "https://user:password@example.com".into(),
                "postgres://app:${DB_PASSWORD}@db/app".into(),
            ],
        ),
        case(
            "authorization-header",
            vec![
                format!("Authorization: Bearer {}", r.pick(ALNUM, 40)),
                format!(
                    "Authorization: Basic {}",
                    b64(format!("bot:{}", r.pick(ALNUM, 16)).as_bytes())
                ),
            ],
            vec![
                "Authorization: Bearer egress-placeholder".into(),
                format!(
                    "Authorization: Basic {}",
                    b64(b"x-access-token:egress-placeholder")
                ),
                "Authorization: Bearer ${TOKEN}".into(),
            ],
        ),
        case(
            "credential-field",
            vec![
                format!(r#"{{"api_key": "{}"}}"#, r.pick(ALNUM, 32)),
                format!(
                    "DB_PASSWORD={}",
                    r.pick(
                        "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789!@#%^*",
                        16
                    )
                ),
                format!(
                    "GET /v1/items?limit=5&access_token={} HTTP/1.1",
                    r.pick(ALNUM, 40)
                ),
                format!("X-Api-Key: {}", r.pick(HEX, 32)),
            ],
            vec![
                format!(r#"{{"api_key_id": "{}"}}"#, r.pick(ALNUM, 32)),
                r#"{"token_type": "Bearer", "max_tokens": 4096}"#.into(),
                format!(r#"{{"session_token": "{}"}}"#, uuid(r)),
                r#"{"password": "correct horse battery staple"}"#.into(),
            ],
        ),
    ]
}

pub(super) fn cases() -> Vec<Case> {
    let mut rng = Rng::new(0x5eed);
    let mut all = prefixed(&mut rng);
    all.extend(prefixed_more(&mut rng));
    all.extend(contextual(&mut rng));
    all.extend(generic(&mut rng));
    all
}

#[test]
fn every_rule_finds_its_secrets_and_names_itself() {
    let s = scanner();
    for c in cases() {
        for hit in &c.hits {
            let text = format!("some text before {hit} and after\n");
            assert_eq!(rule_of(&s, &text).as_deref(), Some(c.id), "{text:?}");
        }
    }
}

/// A near miss trips nothing, except where the generic field rule rightly sees a random value
/// in a credential-looking field (`AccountKey=<40 random bytes>`).
#[test]
fn every_rule_leaves_its_near_misses() {
    let s = scanner();
    for c in cases() {
        for miss in &c.misses {
            let text = format!("some text before {miss} and after\n");
            let found = rule_of(&s, &text);
            let generic =
                found.as_deref() == Some("credential-field") && c.id != "credential-field";
            assert!(
                found.is_none() || generic,
                "{found:?} flagged {text:?}, a near miss of {}",
                c.id
            );
        }
    }
}

#[test]
fn every_rule_has_cases() {
    let ids: Vec<&str> = cases().iter().map(|c| c.id).collect();
    for id in scanner().rules() {
        assert!(ids.contains(&id), "rule {id} has no test case");
    }
    for c in cases() {
        assert!(!c.hits.is_empty() && !c.misses.is_empty(), "{}", c.id);
    }
}

#[test]
fn a_secret_at_the_very_start_or_end_is_found() {
    let s = scanner();
    for c in cases() {
        for hit in &c.hits {
            assert!(
                s.scan(hit.as_bytes()).is_some(),
                "{} missed {hit:?} alone",
                c.id
            );
        }
    }
}
