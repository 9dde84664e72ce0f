//! The built-in rules with a fixed shape: one regular expression each (ASCII, bounded length),
//! the keywords that must appear in a match (the prefilter), and a check of the secret the
//! regex captured (entropy, a JWT's header…). The table in [`super`]'s module doc lists them;
//! a test keeps the two in step. The credential-field and URL-password rules are code, in
//! [`super::field`].
//!
//! A regex names the secret part of its match `secret` when the match holds more (a field
//! name, a separator); otherwise the whole match is the secret. Allowed values are compared
//! with the secret.

use super::heuristics::{decode_base64, entropy, is_placeholder};

/// A match may start anywhere within the rule's longest match before its keyword.
pub(super) const ANY: usize = usize::MAX;

pub(super) struct Spec {
    pub id: &'static str,
    /// One must appear in the match (searched in any ASCII case).
    pub keywords: &'static [&'static str],
    /// The keyword must also appear with exactly this case (checked before the regex runs).
    pub exact: bool,
    /// How many bytes before its keyword a match may start.
    pub lead: usize,
    pub pattern: &'static str,
    pub check: Check,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Check {
    /// At least this many bits per byte, and no placeholder mark (`xxxx`, `example`…).
    Entropy(f64),
    /// An AWS access key id that is not AWS's documentation example (`…EXAMPLE`).
    AwsKeyId,
    /// 40 base64 bytes of an AWS secret: entropy ≥ 4.0, both cases.
    AwsSecret,
    /// The first segment decodes to a JSON object naming an `alg`.
    Jwt,
    /// The regex says it all.
    Shape,
}

impl Check {
    pub(super) fn passes(self, secret: &[u8]) -> bool {
        match self {
            Check::Entropy(floor) => entropy(secret) >= floor && !is_placeholder(secret),
            Check::AwsKeyId => !secret.ends_with(b"EXAMPLE") && entropy(secret) >= 3.0,
            Check::AwsSecret => {
                entropy(secret) >= 4.0
                    && secret.iter().any(u8::is_ascii_lowercase)
                    && secret.iter().any(u8::is_ascii_uppercase)
                    && !is_placeholder(secret)
            }
            Check::Jwt => jwt_header_has_alg(secret),
            Check::Shape => true,
        }
    }
}

fn jwt_header_has_alg(token: &[u8]) -> bool {
    let header = token.split(|b| *b == b'.').next().unwrap_or_default();
    decode_base64(header)
        .and_then(|json| {
            serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&json).ok()
        })
        .is_some_and(|h| h.get("alg").is_some_and(serde_json::Value::is_string))
}

/// The end of a token whose alphabet is `[A-Za-z0-9_-]`: the next byte is outside it.
macro_rules! end {
    () => {
        "(?:[^A-Za-z0-9_-]|$)"
    };
}

/// The assignment between a field name and its value: `=`, `:`, `=>`, `:=`, quotes and
/// spaces around (quotes possibly escaped, as in JSON inside a JSON string).
macro_rules! assign {
    () => {
        r#"\\?["']?\s{0,4}(?:=|:|=>|:=)\s{0,4}\\?["']?"#
    };
}

const E: Check = Check::Entropy(3.0);

pub(super) const SPECS: &[Spec] = &[
    Spec {
        id: "anthropic-api-key",
        keywords: &["sk-ant-api", "sk-ant-admin"],
        exact: true,
        lead: 0,
        pattern: r"sk-ant-(?:api|admin)[0-9]{2}-[A-Za-z0-9_-]{32,200}",
        check: Check::Entropy(3.5),
    },
    Spec {
        id: "anthropic-oauth-token",
        keywords: &["sk-ant-oat", "sk-ant-ort"],
        exact: true,
        lead: 0,
        pattern: r"sk-ant-o[ar]t[0-9]{2}-[A-Za-z0-9_-]{32,200}",
        check: Check::Entropy(3.5),
    },
    Spec {
        id: "openai-api-key",
        keywords: &["sk-proj-", "sk-svcacct-", "sk-admin-", "T3BlbkFJ"],
        exact: true,
        lead: 23,
        pattern: r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,250}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})",
        check: Check::Entropy(3.5),
    },
    Spec {
        id: "aws-access-key-id",
        keywords: &["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
        exact: true,
        lead: 0,
        pattern: r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        check: Check::AwsKeyId,
    },
    Spec {
        id: "aws-secret-access-key",
        keywords: &[
            "aws",
            "amazon",
            "secretaccesskey",
            "secret_access_key",
            "secret-access-key",
        ],
        exact: false,
        lead: ANY,
        pattern: concat!(
            r"(?i:(?:aws|amazon)[A-Za-z0-9_.-]{0,32}(?:secret|sk|key)|secret[_-]?access[_-]?key)",
            r"[A-Za-z0-9_.-]{0,16}",
            assign!(),
            r"(?P<secret>[A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"
        ),
        check: Check::AwsSecret,
    },
    Spec {
        id: "github-pat",
        keywords: &["ghp_"],
        exact: true,
        lead: 0,
        pattern: r"ghp_[A-Za-z0-9]{36,255}",
        check: E,
    },
    Spec {
        id: "github-oauth-token",
        keywords: &["gho_"],
        exact: true,
        lead: 0,
        pattern: r"gho_[A-Za-z0-9]{36,255}",
        check: E,
    },
    Spec {
        id: "github-app-token",
        keywords: &["ghu_", "ghs_"],
        exact: true,
        lead: 0,
        pattern: r"gh[us]_[A-Za-z0-9]{36,255}",
        check: E,
    },
    Spec {
        id: "github-refresh-token",
        keywords: &["ghr_"],
        exact: true,
        lead: 0,
        pattern: r"ghr_[A-Za-z0-9]{36,255}",
        check: E,
    },
    Spec {
        id: "github-fine-grained-pat",
        keywords: &["github_pat_"],
        exact: true,
        lead: 0,
        pattern: r"github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59,200}",
        check: E,
    },
    Spec {
        id: "gitlab-pat",
        keywords: &["glpat-"],
        exact: true,
        lead: 0,
        pattern: r"glpat-[A-Za-z0-9_.-]{20,200}",
        check: E,
    },
    Spec {
        id: "gitlab-token",
        keywords: &[
            "glptt-",
            "gldt-",
            "glrt-",
            "glcbt-",
            "glft-",
            "glsoat-",
            "glimt-",
            "gloas-",
            "glagent-",
            "glffct-",
            "glwt-",
            "GR1348941",
        ],
        exact: true,
        lead: 0,
        pattern: r"(?:gl(?:ptt|dt|rt|cbt|ft|soat|imt|oas|agent|ffct|wt)-[A-Za-z0-9_.-]{20,200}|GR1348941[A-Za-z0-9_-]{20,100})",
        check: E,
    },
    Spec {
        id: "slack-token",
        keywords: &[
            "xoxb-", "xoxp-", "xoxa-", "xoxo-", "xoxs-", "xoxr-", "xoxe", "xapp-",
        ],
        exact: true,
        lead: 0,
        pattern: concat!(
            r"(?:xox[abposr]-(?:[0-9]{1,14}-){1,3}[A-Za-z0-9]{10,64}",
            r"|xoxe(?:\.xox[bp])?-1-[A-Za-z0-9]{64,300}",
            r"|xapp-[0-9]-[A-Z0-9]{8,14}-[0-9]{8,16}-[a-f0-9]{32,80})"
        ),
        check: E,
    },
    Spec {
        id: "slack-webhook",
        keywords: &["hooks.slack.com"],
        exact: false,
        lead: 0,
        pattern: r"(?i:hooks\.slack\.com)/(?:services|workflows|triggers)/[A-Za-z0-9_]{6,20}/[A-Za-z0-9_]{6,20}/[A-Za-z0-9_]{16,64}",
        check: E,
    },
    Spec {
        id: "stripe-secret-key",
        keywords: &["sk_live_", "sk_test_"],
        exact: true,
        lead: 0,
        pattern: r"sk_(?:live|test)_[A-Za-z0-9]{20,247}",
        check: E,
    },
    Spec {
        id: "stripe-restricted-key",
        keywords: &["rk_live_", "rk_test_"],
        exact: true,
        lead: 0,
        pattern: r"rk_(?:live|test)_[A-Za-z0-9]{20,247}",
        check: E,
    },
    Spec {
        id: "stripe-webhook-secret",
        keywords: &["whsec_"],
        exact: true,
        lead: 0,
        pattern: r"whsec_[A-Za-z0-9+/]{32,100}={0,2}",
        check: E,
    },
    Spec {
        id: "google-api-key",
        keywords: &["AIza"],
        exact: true,
        lead: 0,
        pattern: concat!(r"(?P<secret>AIza[0-9A-Za-z_-]{35})", end!()),
        check: E,
    },
    Spec {
        id: "google-oauth-client-secret",
        keywords: &["GOCSPX-"],
        exact: true,
        lead: 0,
        pattern: concat!(r"(?P<secret>GOCSPX-[A-Za-z0-9_-]{28})", end!()),
        check: E,
    },
    Spec {
        id: "google-oauth-token",
        keywords: &["ya29."],
        exact: true,
        lead: 0,
        pattern: r"ya29\.[A-Za-z0-9_-]{30,2000}",
        check: Check::Entropy(3.5),
    },
    Spec {
        id: "gcp-service-account-key",
        keywords: &["private_key_id"],
        exact: true,
        lead: 1,
        pattern: r#""private_key_id"\s{0,4}:\s{0,4}"(?P<secret>[a-f0-9]{40})""#,
        check: E,
    },
    Spec {
        id: "private-key",
        keywords: &["-----BEGIN"],
        exact: true,
        lead: 0,
        pattern: concat!(
            r"-----BEGIN[ A-Z0-9]{0,40}PRIVATE KEY(?: BLOCK)?-----",
            r"(?:\s|\\[rn]|[A-Za-z][A-Za-z-]{0,30}: [^\r\n]{0,100}){1,16}?",
            r"[A-Za-z0-9+/=]{40}"
        ),
        check: Check::Shape,
    },
    Spec {
        id: "jwt",
        keywords: &["eyJ"],
        exact: true,
        lead: 0,
        pattern: r"eyJ[A-Za-z0-9_-]{8,800}\.[A-Za-z0-9_-]{8,2800}\.[A-Za-z0-9_-]{16,400}",
        check: Check::Jwt,
    },
    Spec {
        id: "azure-storage-account-key",
        keywords: &["AccountKey="],
        exact: false,
        lead: 0,
        pattern: r"(?i:AccountKey)=(?P<secret>[A-Za-z0-9+/]{86}==)",
        check: Check::Entropy(4.0),
    },
    Spec {
        id: "azure-shared-access-key",
        keywords: &["SharedAccessKey="],
        exact: false,
        lead: 0,
        pattern: r"(?i:SharedAccessKey)=(?P<secret>[A-Za-z0-9+/]{42,44}=?)",
        check: Check::Entropy(4.0),
    },
    Spec {
        id: "azure-ad-client-secret",
        keywords: &["Q~"],
        exact: true,
        lead: 5,
        pattern: r"(?:^|[^A-Za-z0-9_~.-])(?P<secret>[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34})(?:[^A-Za-z0-9_~-]|$)",
        check: Check::Entropy(3.5),
    },
    Spec {
        id: "digitalocean-token",
        keywords: &["dop_v1_", "doo_v1_", "dor_v1_"],
        exact: true,
        lead: 0,
        pattern: r"do[opr]_v1_[a-f0-9]{64}",
        check: E,
    },
    Spec {
        id: "heroku-api-key",
        keywords: &["HRKU-"],
        exact: true,
        lead: 0,
        pattern: concat!(r"(?P<secret>HRKU-AA[0-9A-Za-z_-]{58})", end!()),
        check: E,
    },
    Spec {
        id: "heroku-api-key",
        keywords: &["heroku"],
        exact: false,
        lead: 0,
        pattern: concat!(
            r"(?i:heroku)[A-Za-z0-9_ .-]{0,25}(?i:key|token|secret|auth|api)[A-Za-z0-9_.-]{0,10}",
            assign!(),
            r"(?P<secret>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
        ),
        check: E,
    },
    Spec {
        id: "npm-token",
        keywords: &["npm_"],
        exact: true,
        lead: 0,
        pattern: concat!(r"(?P<secret>npm_[A-Za-z0-9]{36})", end!()),
        check: E,
    },
    Spec {
        id: "pypi-token",
        keywords: &["pypi-AgE"],
        exact: true,
        lead: 0,
        pattern: r"pypi-AgE[A-Za-z0-9_-]{50,300}",
        check: E,
    },
    Spec {
        id: "huggingface-token",
        keywords: &["hf_"],
        exact: true,
        lead: 0,
        pattern: concat!(r"(?P<secret>hf_[A-Za-z]{34})", end!()),
        check: Check::Entropy(3.5),
    },
    Spec {
        id: "sendgrid-api-key",
        keywords: &["SG."],
        exact: true,
        lead: 0,
        pattern: r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
        check: E,
    },
    Spec {
        id: "shopify-token",
        keywords: &["shpat_", "shpca_", "shppa_", "shpss_"],
        exact: true,
        lead: 0,
        pattern: r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
        check: E,
    },
    Spec {
        id: "docker-hub-token",
        keywords: &["dckr_pat_", "dckr_oat_"],
        exact: true,
        lead: 0,
        pattern: r"dckr_(?:pat|oat)_[A-Za-z0-9_-]{27,64}",
        check: E,
    },
    Spec {
        id: "vault-token",
        keywords: &["hvs.", "hvb."],
        exact: true,
        lead: 0,
        pattern: r"hv[sb]\.[A-Za-z0-9_-]{24,400}",
        check: Check::Entropy(3.5),
    },
    Spec {
        id: "terraform-cloud-token",
        keywords: &[".atlasv1."],
        exact: true,
        lead: 14,
        pattern: r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,80}",
        check: E,
    },
    Spec {
        id: "databricks-token",
        keywords: &["dapi"],
        exact: true,
        lead: 0,
        pattern: r"\bdapi[a-f0-9]{32}(?:-[0-9])?\b",
        check: E,
    },
    Spec {
        id: "groq-api-key",
        keywords: &["gsk_"],
        exact: true,
        lead: 0,
        pattern: r"gsk_[A-Za-z0-9]{52}",
        check: E,
    },
    Spec {
        id: "xai-api-key",
        keywords: &["xai-"],
        exact: true,
        lead: 0,
        pattern: r"xai-[A-Za-z0-9]{80}",
        check: E,
    },
    Spec {
        id: "replicate-token",
        keywords: &["r8_"],
        exact: true,
        lead: 0,
        pattern: concat!(r"(?P<secret>r8_[A-Za-z0-9]{37})", end!()),
        check: E,
    },
    Spec {
        id: "linear-api-key",
        keywords: &["lin_api_"],
        exact: true,
        lead: 0,
        pattern: r"lin_api_[A-Za-z0-9]{40}",
        check: E,
    },
    Spec {
        id: "postman-api-key",
        keywords: &["PMAK-"],
        exact: true,
        lead: 0,
        pattern: r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}",
        check: E,
    },
    Spec {
        id: "age-secret-key",
        keywords: &["AGE-SECRET-KEY-1"],
        exact: true,
        lead: 0,
        pattern: r"AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}",
        check: E,
    },
    Spec {
        id: "doppler-token",
        keywords: &["dp.pt.", "dp.st.", "dp.sa.", "dp.ct."],
        exact: true,
        lead: 0,
        pattern: r"dp\.(?:pt|st|sa|ct)\.[A-Za-z0-9]{40,44}",
        check: E,
    },
    Spec {
        id: "sentry-token",
        keywords: &["sntrys_", "sntryu_"],
        exact: true,
        lead: 0,
        pattern: r"sntry[su]_[A-Za-z0-9_=+/-]{40,300}",
        check: E,
    },
    Spec {
        id: "grafana-token",
        keywords: &["glsa_", "glc_"],
        exact: true,
        lead: 0,
        pattern: r"(?:glsa_[A-Za-z0-9]{32}_[A-Fa-f0-9]{8}|glc_[A-Za-z0-9+/]{32,400}={0,2})",
        check: E,
    },
];
