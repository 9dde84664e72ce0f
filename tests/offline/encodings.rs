//! The encodings the DLP tests send bodies in, and how a test tells that a secret leaked in
//! any of them: compressors, base64 and hex, a reader of compressed prefixes, and a seeded
//! generator of secrets and filler. Shared by `daemon_dlp_decode` (secrets) and
//! `daemon_dlp_bodies` (ordinary bodies, bounds, streaming).

use std::io::Write as _;

use base64::Engine as _;
use flate2::Compression;

/// splitmix64, seeded: the test's secrets and filler.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn pick(&mut self, alphabet: &str, n: usize) -> String {
        let a = alphabet.as_bytes();
        (0..n)
            .map(|_| a[(self.next() % a.len() as u64) as usize] as char)
            .collect()
    }
}

pub const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn hex(b: &[u8], upper: bool) -> String {
    b.iter()
        .map(|x| {
            if upper {
                format!("{x:02X}")
            } else {
                format!("{x:02x}")
            }
        })
        .collect()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn brotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams::default();
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

/// What a prefix of a gzip, zlib, brotli or zstd stream decodes to (as far as it goes).
pub fn inflate_prefix(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut b = brotli::DecompressorWriter::new(Vec::new(), 4096);
    let _ = b.write_all(data);
    let _ = b.flush();
    out.extend_from_slice(b.get_ref());
    let mut zs = zstd::stream::write::Decoder::new(Vec::new()).unwrap();
    let _ = zs.write_all(data);
    let _ = zs.flush();
    out.extend_from_slice(zs.get_ref());
    let mut g = flate2::write::GzDecoder::new(Vec::new());
    let _ = g.write_all(data);
    let _ = g.flush();
    out.extend_from_slice(g.get_ref());
    let mut z = flate2::write::ZlibDecoder::new(Vec::new());
    let _ = z.write_all(data);
    let _ = z.flush();
    out.extend_from_slice(z.get_ref());
    out
}

/// Every form of `secret` a leak could take in `got`: raw, either half, or in what `got`
/// decodes to (inflated, percent-decoded, base64 or hex runs decoded). `None`: no form.
pub fn leaked(got: &[u8], secret: &str) -> Option<&'static str> {
    let (a, b) = secret.split_at(secret.len() / 2);
    let has = |hay: &[u8]| {
        [secret, a, b]
            .iter()
            .any(|n| memchr::memmem::find(hay, n.as_bytes()).is_some())
    };
    if has(got) {
        return Some("raw");
    }
    if has(&inflate_prefix(got)) {
        return Some("compressed");
    }
    let mut text = got.to_vec();
    for _ in 0..4 {
        text = percent_decode(&text);
    }
    if has(&text) {
        return Some("percent-encoded");
    }
    let runs = String::from_utf8_lossy(&text)
        .replace(['\r', '\n'], "")
        .replace("\\n", "");
    let whole = runs.split(|c: char| !c.is_ascii_alphanumeric() && !"+/-_".contains(c));
    // And each path segment of a run on its own (`/p-q/6768…`).
    let segments = whole.clone().flat_map(|run| run.split('/'));
    for run in whole.chain(segments) {
        if run.len() < 16 {
            continue;
        }
        let engine = &base64::engine::general_purpose::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_allow_trailing_bits(true)
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        // A prefix cut anywhere: its whole quanta.
        let std = run.replace('-', "+").replace('_', "/");
        let std = std.trim_end_matches('=');
        if let Ok(d) = engine.decode(&std[..std.len() / 4 * 4])
            && has(&d)
        {
            return Some("base64");
        }
        if run.len() % 2 == 0 && run.bytes().all(|c| c.is_ascii_hexdigit()) {
            let d: Vec<u8> = (0..run.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&run[i..i + 2], 16).unwrap())
                .collect();
            if has(&d) {
                return Some("hex");
            }
        }
    }
    None
}

pub fn percent_decode(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(&b[i + 1..i + 3]), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Plain text around the secret, as a file an agent would send whole: long enough that
/// pipelock releases some of a body before it reaches the secret.
pub fn document(rng: &mut Rng, secret: &str) -> String {
    let mut text = String::new();
    while text.len() < 200 * 1024 {
        text.push_str(&format!(
            "line {}: the build passed in {} ms; note {}\n",
            text.len(),
            rng.next() % 1000,
            rng.pick(ALNUM, 24)
        ));
    }
    text.push_str(&format!("token = {secret}\n"));
    text.push_str("the end\n");
    text
}
