//! No CA key and no token value in the store, nor in what `bottle build` and `bottle show`
//! print: the bundle names the token's variable and mounts the CA each run mints.

use crate::support;

use bottle::manifest::MountSource;
use support::{TestContext, base_recipe, stderr, stdout};

#[test]
fn no_ca_key_or_token_value_is_in_the_store() {
    let ctx = TestContext::with_build_recipe("secrets");
    let secret = format!("sk-test-{}-{}", std::process::id(), "Zq7Xv93LmT");
    let text = format!(
        "{}\n[[egress.routes]]\nhost = \"api.example.org\"\ntoken_env = \"BOTTLE_TEST_TOKEN\"\n\n[supervise]\nenabled = true\n\n[[git-gate.upstreams]]\nname = \"origin\"\nurl = \"ssh://git@example.org/x.git\"\nidentity = \"~/.ssh/id_test\"\n",
        base_recipe("secrets")
    );
    let r = ctx.write_recipe("r.toml", &text);
    let mut cmd = ctx.cmd();
    cmd.env("BOTTLE_TEST_TOKEN", &secret);
    let out = ctx.output_of(cmd, &["-v", "build", r.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hash = stdout(&out).lines().last().unwrap().to_string();
    assert!(!stdout(&out).contains(&secret) && !stderr(&out).contains(&secret));
    let mut cmd = ctx.cmd();
    cmd.env("BOTTLE_TEST_TOKEN", &secret);
    let show = ctx.output_of(cmd, &["show", "--json", &hash]);
    assert!(!stdout(&show).contains(&secret));
    // Neither the token's value nor any private key is in a file of the store: CAs are
    // minted per run, on the machine that runs.
    let a_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    assert!(
        holds_pem_key(a_key.as_bytes()),
        "the check finds a real key"
    );
    for (path, bytes) in ctx.snapshot() {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the token value is in store file {path}"
        );
        assert!(
            !holds_pem_key(&bytes),
            "a private key is in store file {path}"
        );
        assert!(!path.ends_with(".key"), "store file {path}");
    }
    let show: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let bundle = &show["bundle"]["spec"];
    assert_eq!(bundle["secrets"], serde_json::json!(["BOTTLE_TEST_TOKEN"]));
    let daemons: Vec<&str> = bundle["daemons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(daemons, ["pipelock", "git-gate", "supervise"]);
    // The bundle mounts the run's CA from the run's folder, and no key from the config.
    let spec = ctx.entry(&hash).bundle_spec().clone();
    let ca: Vec<String> = spec
        .mounts
        .iter()
        .filter_map(|m| match &m.source {
            MountSource::Ca(f) => Some(f.clone()),
            _ => None,
        })
        .collect();
    // One CA per run, pipelock's: egress is a stage of pipelock.
    use bottle::config::ca_files::{PIPELOCK_CERT, PIPELOCK_KEY};
    for f in [PIPELOCK_CERT, PIPELOCK_KEY] {
        assert!(ca.iter().any(|c| c == f), "{f} not mounted: {ca:?}");
    }
    let env = &show["guest"]["spec"]["env"];
    assert_eq!(env["CLAUDE_CODE_OAUTH_TOKEN"], "egress-placeholder");
    for k in ["NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"] {
        assert_eq!(env[k], show["guest"]["spec"]["ca_guest_path"], "{k}");
    }
    assert!(
        env["HTTPS_PROXY"]
            .as_str()
            .unwrap()
            .contains("{{bundle_ip}}")
    );

    // Without routes, the bundle takes no token.
    let plain = ctx.build(&ctx.write_recipe("p.toml", &base_recipe("secrets-plain")));
    let spec = ctx.entry(&plain).bundle_spec().clone();
    assert!(spec.secrets.is_empty());
    let ca: Vec<&MountSource> = spec
        .mounts
        .iter()
        .map(|m| &m.source)
        .filter(|s| matches!(s, MountSource::Ca(_)))
        .collect();
    assert_eq!(
        ca,
        [
            &MountSource::Ca(PIPELOCK_CERT.into()),
            &MountSource::Ca(PIPELOCK_KEY.into())
        ]
    );
}

/// Whether `bytes` hold a PEM private key: a `…PRIVATE KEY-----` line followed by a line of
/// base64. (The bundle image holds bottle's binary, whose key parsers name the marker itself.)
fn holds_pem_key(bytes: &[u8]) -> bool {
    const MARKER: &[u8] = b"PRIVATE KEY-----";
    bytes.windows(MARKER.len()).enumerate().any(|(i, w)| {
        w == MARKER && {
            let rest = &bytes[i + MARKER.len()..];
            let rest = rest.strip_prefix(b"\r").unwrap_or(rest);
            rest.strip_prefix(b"\n").is_some_and(|line| {
                line.len() >= 40
                    && line[..40]
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            })
        }
    })
}
