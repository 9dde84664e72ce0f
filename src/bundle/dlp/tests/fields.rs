//! The credential-field rule: the carriers it reads, the look-alikes it leaves.

use super::super::heuristics::looks_random;
use super::*;

#[test]
fn credential_fields_in_every_carrier() {
    let s = scanner();
    let mut rng = Rng::new(21);
    let v = rng.pick(ALNUM, 32);
    let carriers = [
        format!(r#"{{"client_secret":"{v}"}}"#),
        format!(r#"{{ "apiKey" : "{v}" }}"#),
        format!("password: '{v}'\n"),
        format!("export GITHUB_TOKEN={v}\n"),
        format!("SECRET_KEY_BASE = \"{v}\"\n"),
        format!("spring.datasource.password={v}\n"),
        format!("x-auth-token: {v}"),
        format!("<password>{v}</password>"),
        format!("mycli login --token {v} --verbose"),
        format!("curl -d 'grant_type=client_credentials&client_secret={v}'"),
        format!("conn = connect(host='db', passwd=\"{v}\")"),
        format!("const config = {{ authToken: `{v}` }};"),
        format!("$password => '{v}',"),
        format!("Authorization: token {v}"),
        format!("AWS_SESSION_TOKEN={v}"),
        format!("const API_TOKEN: &str = \"{v}\";"),
    ];
    for text in carriers {
        assert!(s.scan(text.as_bytes()).is_some(), "missed {text:?}");
    }
}

#[test]
fn look_alikes_in_credential_fields_are_left() {
    let s = scanner();
    let mut rng = Rng::new(22);
    let sha256 = rng.pick(HEX, 64);
    let text_b64 = b64(b"this is an ordinary sentence, not a key at all");
    let quiet = [
        format!(r#"{{"token": "{}"}}"#, uuid(&mut rng)),
        format!(r#"{{"token_sha256": "{sha256}", "secret_name": "db-password-v2"}}"#),
        format!(r#"{{"integrity": "sha512-{}", "token": "sha256:{sha256}"}}"#, rng.pick(B64, 86)),
        format!(r#"{{"auth": "{text_b64}"}}"#),
        r#"{"password": "getDatabasePasswordFromVault"}"#.into(),
        r#"{"token": "https://auth.example.com/oauth2/token?x=1"}"#.into(),
        r#"{"secret": "v1.24.3-beta.1+build.7"}"#.into(),
        r#"{"api_key": "${OPENAI_API_KEY}", "token": "{{ secrets.GH }}"}"#.into(),
        r#"{"api_key": "<your-api-key-here>", "password": "xxxxxxxxxxxxxxxx"}"#.into(),
        r#"{"secret": "0123456789abcdef0123456789abcdef"}"#.into(),
        format!(r#"{{"next_page_token": "{}", "csrf_token": "{}"}}"#, rng.pick(ALNUM, 40), rng.pick(ALNUM, 40)),
        format!(r#"{{"max_tokens": 4096, "token_count": 1234, "tokenizer": "{}"}}"#, rng.pick(ALNUM, 30)),
        format!(r#"{{"password_hash": "{}", "api_key_id": "{}"}}"#, rng.pick(B64, 40), rng.pick(ALNUM, 20)),
        "let token = self.next_token()?; if token == Token::Eof { return }".into(),
        "password = os.environ[\"DB_PASSWORD\"]; token: process.env.GITHUB_TOKEN_2024".into(),
        r#"<input type="password" name="password" placeholder="Password">"#.into(),
        "The author of the secret garden used a token ring network.".into(),
        "PWD=/home/agent/work/project-2024/src".into(),
        "pub pszPassword: windows_sys::core::PWSTR, let token: Token2024Kind = Token2024Kind::new();".into(),
        "pub const STATUS_WRONG_PASSWORD: NTSTATUS = -1073741718i32;".into(),
        format!("token_env = \"ANTHROPIC_API_KEY\"  # secret: {}", uuid(&mut rng)),
    ];
    for text in quiet {
        assert_eq!(s.scan(text.as_bytes()), None, "flagged {text:?}");
    }
}

#[test]
fn random_values_pass_the_heuristics() {
    let mut rng = Rng::new(23);
    for (alphabet, lens) in [
        (ALNUM, 16..65),
        (HEX, 32..65),
        (B64, 20..65),
        (ALNUM_US, 24..80),
    ] {
        let mut passed = 0;
        let mut total = 0;
        for _ in 0..40 {
            for len in lens.clone() {
                total += 1;
                passed += usize::from(looks_random(rng.pick(alphabet, len).as_bytes(), 16));
            }
        }
        let rate = passed as f64 / total as f64;
        assert!(rate >= 0.99, "{alphabet}: {passed}/{total}");
    }
}

#[test]
fn ordinary_values_fail_the_heuristics() {
    for v in [
        "getUserAccessToken",
        "correct-horse-battery-staple",
        "settings.API_KEY_2024",
        "550e8400-e29b-41d4-a716-446655440000",
        "v10.4.1-rc.2",
        "/usr/local/bin/python3",
        "https://example.com/x",
        "aaaaaaaaaaaaaaaaaaaaaaaa",
        "1234567890123456789",
        "SGVsbG8sIHRoaXMgaXMgYSBzZW50ZW5jZQ==",
        "egress-placeholder",
        "Content-Type2024",
        "X509HardwareKeyUsageFlags",
        "SpAcceptCredentialsFn",
        "PKERB_S4U2PROXY_CRED",
        "windows_sys::core::PWSTR",
        "-2141913080i32",
        "0x8004170B_u32",
        "arn:aws:kms:us-east-1:123456789012:key/1a2b",
    ] {
        assert!(!looks_random(v.as_bytes(), 12), "{v}");
    }
}
