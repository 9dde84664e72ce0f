//! What DLP lets through on purpose, and only that: values a recipe allows, the egress
//! placeholder, a recipe's own rules with their secret group, and a signed URL's credential in
//! the request target.

use super::rules::jwt;
use super::*;

#[test]
fn allowed_values_are_not_flagged() {
    let mut rng = Rng::new(7);
    let key = format!("ghp_{}", rng.pick(ALNUM, 36));
    let doc_example = format!("see {key} in the docs");
    let s = Scanner::new(&dlp(&[], &[&key])).unwrap().unwrap();
    assert_eq!(s.scan(key.as_bytes()), None, "equal");
    let s = Scanner::new(&dlp(&[], &[&doc_example])).unwrap().unwrap();
    assert_eq!(
        s.scan(format!("x {key} y").as_bytes()),
        None,
        "contained in an allowed value"
    );
    let s = Scanner::new(&dlp(&[], &[&key[..20]])).unwrap().unwrap();
    assert!(
        s.scan(key.as_bytes()).is_some(),
        "an allowed prefix does not allow the whole"
    );
}

#[test]
fn egress_placeholder_is_never_flagged() {
    let s = scanner();
    let p = crate::daemons::egress::PLACEHOLDER;
    for text in [
        format!("Authorization: Bearer {p}"),
        format!("x-api-key: {p}"),
        format!("GET /repo.git/info/refs?access_token={p}"),
        format!("{{\"api_key\":\"{p}\",\"password\":\"{p}\"}}"),
        format!("https://x-access-token:{p}@github.com/o/r.git"),
    ] {
        assert_eq!(s.scan(text.as_bytes()), None, "{text}");
    }
}

#[test]
fn recipe_rules_are_added_with_their_ids() {
    let mut rng = Rng::new(9);
    let token = format!(
        "itk_{}",
        rng.pick("abcdefghijklmnopqrstuvwxyz0123456789", 20)
    );
    let s = Scanner::new(&dlp(&[("internal-token", r"itk_[a-z0-9]{20}")], &[]))
        .unwrap()
        .unwrap();
    let found = s.scan(format!("{{\"x\": \"{token}\"}}").as_bytes());
    assert_eq!(found.map(|f| f.rule).as_deref(), Some("internal-token"));
    assert!(s.rules().any(|r| r == "internal-token"));
    let pieces: Vec<&[u8]> = vec![
        b"prefix ",
        &token.as_bytes()[..9],
        &token.as_bytes()[9..],
        b" suffix",
    ];
    assert_eq!(
        body_rule(&s, &pieces).map(|f| f.rule).as_deref(),
        Some("internal-token")
    );
}

#[test]
fn a_recipe_rule_secret_group_is_what_allow_compares() {
    let s = Scanner::new(&dlp(
        &[("corp-password", r"corp_pw=(?P<secret>[A-Za-z0-9]{12,})")],
        &["Aa1Bb2Cc3Dd4"],
    ))
    .unwrap()
    .unwrap();
    assert_eq!(s.scan(b"corp_pw=Aa1Bb2Cc3Dd4"), None);
    assert!(s.scan(b"corp_pw=Zz9Yy8Xx7Ww6").is_some());
}

fn github_asset_url(rng: &mut Rng) -> String {
    let jwt = jwt(rng, r#"{"typ":"JWT","alg":"HS256"}"#);
    format!(
        "https://release-assets.githubusercontent.com/github-production-release-asset/{}/{}?sp=r&sv=2018-11-09&sr=b&spr=https&se=2025-11-26T15%3A13%3A33Z&rscd=attachment%3B+filename%3Dtool.tar.gz&skoid={}&sks=b&skv=2018-11-09&sig={}%3D&jwt={jwt}&filename=tool.tar.gz",
        rng.pick("0123456789", 9),
        uuid(rng),
        uuid(rng),
        rng.pick(ALNUM, 43)
    )
}

fn s3_presigned_url(rng: &mut Rng) -> String {
    format!(
        "https://bucket.s3.amazonaws.com/a/b.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA{}%2F20240718%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20240718T144553Z&X-Amz-Expires=300&X-Amz-Security-Token={}&X-Amz-SignedHeaders=host&X-Amz-Signature={}",
        rng.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
        rng.pick(B64, 300),
        rng.pick(HEX, 64)
    )
}

#[test]
fn credentials_of_a_signed_url_are_its_grant_in_the_target_only() {
    let s = scanner();
    let mut rng = Rng::new(31);
    for url in [github_asset_url(&mut rng), s3_presigned_url(&mut rng)] {
        assert_eq!(s.scan_url(url.as_bytes()).map(|f| f.rule), None, "{url}");
        // The same URL in a body or a header is no grant.
        assert!(
            s.scan(format!("location: {url}").as_bytes()).is_some(),
            "{url}"
        );
        let curl = format!("{{\"content\": \"< HTTP/2 302\\n< location: {url}\\n\"}}");
        assert!(body_rule(&s, &[curl.as_bytes()]).is_some(), "{curl}");
    }
    let token = jwt(&mut rng, r#"{"alg":"HS256"}"#);
    let key = format!("AKIA{}", rng.pick("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16));
    let url = |u: String| s.scan_url(u.as_bytes()).map(|f| f.rule);
    // Outside a scheme's own parameter, its host, or without its signature: found.
    for (target, rule) in [
        (format!("/collect?jwt={token}&sig=abc"), "jwt"),
        (
            format!("https://evil.example/?jwt={token}&sig=abc&sv=1"),
            "jwt",
        ),
        (format!("https://evil.example/?x={token}"), "jwt"),
        (
            format!("https://objects.githubusercontent.com/a?sig=x&token={token}"),
            "jwt",
        ),
        (
            format!("/upload?key={key}&Signature=x"),
            "aws-access-key-id",
        ),
        (
            format!("/upload?key={key}&X-Amz-Signature=x"),
            "aws-access-key-id",
        ),
        (
            format!("https://b.s3.amazonaws.com/a?X-Amz-Credential={key}%2F2024"),
            "aws-access-key-id",
        ),
    ] {
        assert_eq!(url(target.clone()).as_deref(), Some(rule), "{target}");
    }
    // The exact parameter, its scheme's signature present (in any order): no finding.
    assert_eq!(
        url(format!(
            "https://b.s3.amazonaws.com/a?X-Amz-Signature=1&x-amz-credential={key}%2F2024%2Fus-east-1"
        )),
        None
    );
}
