//! Image config JSON: the config [`super::write_image`] writes, the rewrite [`super::normalize`]
//! applies to a saved image's config, and the canonical serialization both use (sorted keys, no
//! insignificant whitespace), so the same content always gives the same bytes and image id.

use anyhow::{Result, anyhow, bail};
use serde_json::{Map, Value, json};

use super::image::{EPOCH, ImageConfig};
use super::sha256::is_sha256_hex;

/// Top-level config keys that depend on the build machine or on the throwaway container a
/// legacy `docker build` step ran in: removed. (`container_config` holds that container's
/// hostname and its parent image's id; `docker_version` is the engine's.)
const MACHINE_KEYS: &[&str] = &["container", "container_config", "docker_version"];

/// Keys of the config's `config` object that do: `Image` is the id of the build's intermediate
/// parent image (which holds timestamps), `Hostname` the build container's.
const RUN_MACHINE_KEYS: &[&str] = &["Image", "Hostname"];

/// The config of a `FROM scratch` image of one layer (`diff_id`, `sha256:…`), for this host's
/// architecture.
pub(super) fn for_files(config: &ImageConfig, diff_id: &str) -> Vec<u8> {
    let mut run = Map::new();
    for (key, list) in [
        ("Entrypoint", &config.entrypoint),
        ("Cmd", &config.cmd),
        ("Env", &config.env),
    ] {
        if !list.is_empty() {
            run.insert(key.to_string(), json!(list));
        }
    }
    if !config.labels.is_empty() {
        run.insert("Labels".to_string(), json!(config.labels));
    }
    let value = json!({
        "architecture": architecture(),
        "os": "linux",
        "created": EPOCH,
        "config": run,
        "history": [{"created": EPOCH, "created_by": "bottle"}],
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    canonical_json(&value)
}

/// The `rootfs.diff_ids` of a config, checked to be `layers` sha256 digests.
pub(super) fn diff_ids(raw: &[u8], layers: usize) -> Result<Vec<String>> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| anyhow!("it is not JSON ({e})"))?;
    let ids = value
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("it has no rootfs.diff_ids"))?;
    let ids: Vec<String> = ids
        .iter()
        .map(|id| match id.as_str() {
            Some(s) if s.strip_prefix("sha256:").is_some_and(is_sha256_hex) => Ok(s.to_string()),
            _ => Err(anyhow!(
                "rootfs.diff_ids holds {id}, not a sha256:<hex> digest"
            )),
        })
        .collect::<Result<_>>()?;
    if ids.len() != layers {
        bail!(
            "rootfs.diff_ids lists {} layers but the archive's manifest.json lists {layers}",
            ids.len()
        );
    }
    Ok(ids)
}

/// A saved image's config with every date set to [`EPOCH`], the build machine's details and
/// unset fields removed, and `rootfs.diff_ids` replaced by `diff_ids` (of the rewritten layers); canonical.
pub(super) fn normalize(raw: &[u8], diff_ids: &[String]) -> Result<Vec<u8>> {
    let mut value: Value =
        serde_json::from_slice(raw).map_err(|e| anyhow!("it is not JSON ({e})"))?;
    let top = value
        .as_object_mut()
        .ok_or_else(|| anyhow!("it is not a JSON object"))?;
    for key in MACHINE_KEYS {
        top.remove(*key);
    }
    top.insert("created".to_string(), json!(EPOCH));
    top.retain(|_, v| !is_unset(v));
    if let Some(run) = top.get_mut("config").and_then(Value::as_object_mut) {
        for key in RUN_MACHINE_KEYS {
            run.remove(*key);
        }
        run.retain(|_, v| !is_unset(v));
    }
    if let Some(history) = top.get_mut("history").and_then(Value::as_array_mut) {
        for step in history.iter_mut().filter_map(Value::as_object_mut) {
            step.insert("created".to_string(), json!(EPOCH));
        }
    }
    let rootfs = top
        .entry("rootfs")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| anyhow!("its rootfs is not a JSON object"))?;
    rootfs.insert("type".to_string(), json!("layers"));
    rootfs.insert("diff_ids".to_string(), json!(diff_ids));
    Ok(canonical_json(&value))
}

/// A value that means the same as no value: `null`, `""` or `false`. docker 20.10 writes every
/// field of the run config (`"Domainname":""`, `"Tty":false`, `"Volumes":null`, …) where newer
/// engines leave them out; dropping them keeps only what the image sets.
fn is_unset(value: &Value) -> bool {
    matches!(value, Value::Null | Value::Bool(false)) || value.as_str() == Some("")
}

/// `value` serialized canonically: object keys sorted by their UTF-8 bytes, no whitespace
/// outside strings. Independent of serde_json's map ordering features.
pub(super) fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        scalar => write_scalar(scalar, out),
    }
}

/// A string, number, bool or null, as serde_json writes it.
fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The OCI name of this host's CPU architecture (the bundle image holds this host's binary).
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let a: Value =
            serde_json::from_str(r#"{ "b": [1, {"z": 1, "a": "x\"y"}], "a": null }"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"a":"x\"y","z":1}]}"#).unwrap();
        let expected = br#"{"a":null,"b":[1,{"a":"x\"y","z":1}]}"#;
        assert_eq!(canonical_json(&a), expected);
        assert_eq!(canonical_json(&b), expected);
    }

    /// A config as docker 20.10's legacy builder writes it (trimmed).
    fn saved_config(container: &str, created: &str, parent: &str) -> Vec<u8> {
        json!({
            "architecture": "amd64",
            "config": {"Hostname": "", "User": "1000:1000", "Image": parent, "Env": ["A=1"],
                       "Labels": {"k": "v"}, "Cmd": null},
            "container": container,
            "container_config": {"Hostname": &container[..12], "Image": parent},
            "created": created,
            "docker_version": "20.10.24+dfsg1",
            "history": [
                {"created": created, "created_by": "/bin/sh -c mkdir -p /home/node"},
                {"created": created, "created_by": "/bin/sh -c #(nop)  USER 1000:1000",
                 "empty_layer": true}
            ],
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", "1".repeat(64))]}
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn normalize_keeps_content_and_drops_the_build_machine() {
        let ids = vec![format!("sha256:{}", "2".repeat(64))];
        let one = saved_config(&"a".repeat(64), "2026-01-01T10:00:00.1Z", "sha256:aaa");
        let two = saved_config(&"b".repeat(64), "2026-01-02T11:00:00.2Z", "sha256:bbb");
        let a = normalize(&one, &ids).unwrap();
        assert_eq!(a, normalize(&two, &ids).unwrap());
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["created"], EPOCH);
        assert_eq!(v["history"][1]["created"], EPOCH);
        assert_eq!(v["history"][1]["empty_layer"], true);
        assert_eq!(v["config"]["User"], "1000:1000");
        assert_eq!(v["config"]["Labels"]["k"], "v");
        assert_eq!(v["rootfs"]["diff_ids"][0], ids[0].as_str());
        for gone in [
            "/container",
            "/container_config",
            "/docker_version",
            "/config/Image",
            "/config/Hostname",
            "/config/Cmd",
        ] {
            assert!(v.pointer(gone).is_none(), "{gone} is kept");
        }
        assert_eq!(canonical_json(&v), a, "the output is canonical");
        assert!(normalize(b"[1]", &ids).is_err());
    }

    #[test]
    fn diff_ids_must_match_the_layer_count_and_be_digests() {
        let raw = saved_config(&"a".repeat(64), EPOCH, "");
        assert_eq!(diff_ids(&raw, 1).unwrap().len(), 1);
        assert!(diff_ids(&raw, 2).is_err());
        let bad = br#"{"rootfs":{"diff_ids":["md5:00"]}}"#;
        assert!(diff_ids(bad, 1).is_err());
        assert!(diff_ids(b"{}", 0).is_err());
    }

    #[test]
    fn written_config_is_canonical_and_omits_empty_lists() {
        let config = ImageConfig {
            entrypoint: vec!["/bottle".into(), "sidecar".into()],
            ..ImageConfig::default()
        };
        let raw = for_files(&config, "sha256:00");
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(canonical_json(&v), raw);
        assert_eq!(v["config"]["Entrypoint"][1], "sidecar");
        assert!(v["config"].get("Cmd").is_none());
        assert_eq!(v["created"], EPOCH);
    }
}
