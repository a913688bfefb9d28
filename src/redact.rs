//! Redaction: the one function that removes every known secret from a foreign text (a
//! command's stderr, an API's error body, a message bound for the journal or a report) before
//! rekey quotes it anywhere.
//!
//! A secret is rarely echoed the way it was sent. A PEM or OpenSSH private key or a GCP key
//! JSON holds newlines, quotes and backslashes, so an API that echoes the request shows it
//! JSON-escaped; a form body shows it URL-encoded; a header or a key file shows it in base64.
//! [`spellings`] lists every form rekey knows for one secret, and [`redact`] replaces them all
//! (the longest first, so a spelling is never half-replaced by a shorter one), in one pass.
//!
//! The spellings of one secret: raw; JSON-escaped; URL-encoded (form and path style); base64,
//! standard and URL-safe, padded or not; the part of the base64 that is the same wherever the
//! secret sits inside a longer encoded document (base64 of a key JSON that contains it); and,
//! for a multi-line secret, each of its longer lines (an echo that re-wraps or re-indents a
//! PEM still shows its lines).

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What a redacted spelling is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Derived spellings shorter than this are not searched for on their own: a 3-character
/// base64 fragment would match innocent text, and is no secret by itself. The raw value is
/// always searched, however short.
const MIN_DERIVED: usize = 12;

/// Every form of `secret` that [`redact`] removes (empty for an empty secret).
pub fn spellings(secret: &str) -> Vec<String> {
    if secret.is_empty() {
        return Vec::new();
    }
    let mut out = vec![secret.to_owned()];
    let mut derived = Vec::new();
    // JSON-escaped: what an API that echoes a JSON request body shows.
    if let Ok(quoted) = serde_json::to_string(secret) {
        derived.push(quoted[1..quoted.len() - 1].to_owned());
        // Some encoders also escape `/` (PHP, old JavaScript).
        derived.push(quoted[1..quoted.len() - 1].replace('/', "\\/"));
    }
    // URL-encoded: form bodies (space as `+`) and paths and queries (space as `%20`).
    derived.push(url::form_urlencoded::byte_serialize(secret.as_bytes()).collect());
    derived.push(
        url::form_urlencoded::byte_serialize(secret.as_bytes())
            .collect::<String>()
            .replace('+', "%20"),
    );
    // base64, exact and inside a longer document.
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        derived.push(engine.encode(secret));
    }
    derived.extend(embedded_base64(secret.as_bytes()));
    // Lines of a multi-line secret (a PEM body), however the echo joins them.
    if secret.contains('\n') {
        derived.extend(
            secret
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| l.len() >= 16),
        );
    }
    for d in derived {
        if d.len() >= MIN_DERIVED.min(secret.len()) && !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// The base64 characters that encode `secret` wherever it sits in a longer byte string: for
/// each of the three alignments, the characters whose 6 bits come from the secret alone
/// (those at the edges also hold bits of the neighbours, and are left out). Standard and
/// URL-safe alphabets.
fn embedded_base64(secret: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(secret);
        let encoded = STANDARD_NO_PAD.encode(&padded);
        // The first character holding only secret bits: after the prefix's bits (8 per byte),
        // rounded up to a whole 6-bit character.
        let first = (offset * 8).div_ceil(6);
        // The last whole character inside the secret's bits.
        let last = (padded.len() * 8) / 6;
        if last <= first || last > encoded.len() {
            continue;
        }
        let core = &encoded[first..last];
        if core.len() >= MIN_DERIVED {
            out.push(core.to_owned());
            out.push(core.replace('+', "-").replace('/', "_"));
        }
    }
    out
}

/// `text` with every spelling of every non-empty secret replaced by [`REDACTED`].
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut patterns: Vec<String> = secrets.iter().flat_map(|s| spellings(s)).collect();
    if patterns.is_empty() {
        return text.to_owned();
    }
    patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
    patterns.dedup();
    match AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(&patterns)
    {
        Ok(ac) => ac.replace_all(text, &vec![REDACTED; patterns.len()]),
        // Too many patterns to build an automaton (never with rekey's few secrets): replace
        // one by one, longest first.
        Err(_) => patterns
            .iter()
            .fold(text.to_owned(), |t, p| t.replace(p.as_str(), REDACTED)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDx\"quote\\back/slash\n-----END OPENSSH PRIVATE KEY-----\n";

    fn assert_gone(text: &str) {
        let clean = redact(text, &[PEM]);
        assert!(clean.contains(REDACTED), "{clean}");
        for line in PEM.lines().filter(|l| l.len() >= 16) {
            assert!(!clean.contains(line), "a line survived in {clean}");
        }
    }

    #[test]
    fn every_spelling_is_replaced() {
        assert_gone(&format!("raw: {PEM} end"));
        let json = serde_json::json!({"value": PEM}).to_string();
        assert_gone(&format!("HTTP 400: {json}"));
        assert_gone(&STANDARD.encode(PEM));
        assert_gone(&URL_SAFE_NO_PAD.encode(PEM));
        let form: String = url::form_urlencoded::byte_serialize(PEM.as_bytes()).collect();
        assert_gone(&format!("body={form}"));
        // CircleCI flattens control characters of a message to spaces.
        assert_gone(&PEM.replace('\n', " "));
    }

    #[test]
    fn base64_of_a_document_holding_the_secret() {
        let secret = "s3cr3t-value-with-some-length";
        for prefix in ["", "a", "ab", "{\"private_key\": \""] {
            let doc = format!("{prefix}{secret}\"}}");
            let encoded = STANDARD.encode(&doc);
            let clean = redact(&encoded, &[secret]);
            assert!(clean.contains(REDACTED), "prefix {prefix:?}: {clean}");
            // All but the few characters at the secret's edges are gone.
            let left = clean.len() - REDACTED.len();
            assert!(
                left + secret.len() * 4 / 3 - 4 <= encoded.len(),
                "prefix {prefix:?}: {clean}"
            );
        }
    }

    #[test]
    fn short_secrets_and_innocent_text() {
        assert_eq!(
            redact("a s3cr3t b s3cr3t", &["s3cr3t", ""]),
            "a [redacted] b [redacted]"
        );
        assert_eq!(redact("nothing here", &[]), "nothing here");
        assert_eq!(redact("nothing here", &["absent-value"]), "nothing here");
    }
}
