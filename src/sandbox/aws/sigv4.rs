//! Signature Version 4 on the receiving side: parse the `Authorization` header, rebuild the
//! canonical request from what arrived, and check the signature with the key's secret — the
//! same computation AWS does, so that a request the real SDK signs passes and one signed with
//! a wrong secret, a tampered body or a stale clock does not.
//!
//! Only header-signed requests are understood (the SDK signs IAM and STS calls that way);
//! presigned query-string signatures are refused as incomplete.

use axum::http::HeaderMap;
use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub(crate) const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's `X-Amz-Date` may be from the server's clock, as AWS allows.
pub(crate) const MAX_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…,
/// Signature=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization {
    pub access_key_id: String,
    /// `YYYYMMDD` of the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    /// Lower-case names, in the order the client listed them.
    pub signed_headers: Vec<String>,
    /// Lower-case hex.
    pub signature: String,
}

/// Why a header could not be read as a SigV4 authorization; each maps to AWS's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// No `Authorization` header at all.
    Missing,
    /// Present but not a complete SigV4 header; the text says what is missing.
    Incomplete(String),
}

/// Reads the access key id alone, for the request log, even from a header that is otherwise
/// malformed.
pub(crate) fn access_key_id_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let credential = value
        .split([' ', ','])
        .find_map(|part| part.trim().strip_prefix("Credential="))?;
    let id = credential.split('/').next()?;
    (!id.is_empty()).then(|| id.to_owned())
}

pub(crate) fn parse_authorization(headers: &HeaderMap) -> Result<Authorization, Malformed> {
    let Some(value) = headers.get("authorization") else {
        return Err(Malformed::Missing);
    };
    let value = value
        .to_str()
        .map_err(|_| Malformed::Incomplete("Authorization header is not ASCII".into()))?;
    let Some(rest) = value.trim().strip_prefix(ALGORITHM) else {
        return Err(Malformed::Incomplete(format!(
            "Unsupported AWS 'algorithm': '{}'",
            value.split_whitespace().next().unwrap_or_default()
        )));
    };
    let mut credential = None;
    let mut signed_headers = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed_headers = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let missing = |name: &str| {
        Malformed::Incomplete(format!(
            "Authorization header requires '{name}' parameter. Authorization={value}"
        ))
    };
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed_headers = signed_headers.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;

    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, terminator] = scope.as_slice() else {
        return Err(Malformed::Incomplete(format!(
            "Credential should be scoped to a valid region, not '{credential}'"
        )));
    };
    if *terminator != "aws4_request" {
        return Err(Malformed::Incomplete(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'"
        )));
    }
    if access_key_id.is_empty() || date.len() != 8 || region.is_empty() || service.is_empty() {
        return Err(Malformed::Incomplete(format!(
            "Credential should be scoped to a valid region, not '{credential}'"
        )));
    }
    let signed_headers: Vec<String> = signed_headers
        .split(';')
        .filter(|h| !h.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    if !signed_headers.iter().any(|h| h == "host") {
        return Err(Malformed::Incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }
    Ok(Authorization {
        access_key_id: (*access_key_id).to_owned(),
        date: (*date).to_owned(),
        region: (*region).to_owned(),
        service: (*service).to_owned(),
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

/// `X-Amz-Date` (`20230101T120000Z`), parsed.
pub(crate) fn request_time(headers: &HeaderMap) -> Option<(String, DateTime<Utc>)> {
    let raw = headers.get("x-amz-date")?.to_str().ok()?;
    let parsed = NaiveDateTime::parse_from_str(raw, "%Y%m%dT%H%M%SZ").ok()?;
    Some((raw.to_owned(), parsed.and_utc()))
}

/// The canonical request, as in AWS's "Create a canonical request" — `None` when a header
/// the client says it signed is not in the request (the signature cannot match then).
pub(crate) fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    signed_headers: &[String],
    body: &[u8],
) -> Option<String> {
    let mut sorted: Vec<&String> = signed_headers.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut canonical_headers = String::new();
    for name in &sorted {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().map(trim_all))
            .collect::<Result<_, _>>()
            .ok()?;
        if values.is_empty() {
            return None;
        }
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(","));
        canonical_headers.push('\n');
    }
    let signed: Vec<&str> = sorted.iter().map(|s| s.as_str()).collect();
    Some(format!(
        "{method}\n{path}\n{query}\n{canonical_headers}\n{signed}\n{payload}",
        path = canonical_path(raw_path),
        query = canonical_query(raw_query.unwrap_or_default()),
        signed = signed.join(";"),
        payload = hex::encode(Sha256::digest(body)),
    ))
}

/// Whether `signature` is the one `secret` gives for this request. The comparison is the
/// HMAC's own, in constant time.
pub(crate) fn verify(
    secret: &str,
    auth: &Authorization,
    amz_date: &str,
    canonical_request: &str,
) -> bool {
    let Ok(expected) = hex::decode(&auth.signature) else {
        return false;
    };
    let Some(mut mac) = signing_mac(secret, auth) else {
        return false;
    };
    mac.update(string_to_sign(auth, amz_date, canonical_request).as_bytes());
    mac.verify_slice(&expected).is_ok()
}

/// The signature a client holding `secret` would send; tests use it to sign by hand.
#[cfg(test)]
pub(crate) fn sign(
    secret: &str,
    auth: &Authorization,
    amz_date: &str,
    canonical_request: &str,
) -> Option<String> {
    let mut mac = signing_mac(secret, auth)?;
    mac.update(string_to_sign(auth, amz_date, canonical_request).as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

fn string_to_sign(auth: &Authorization, amz_date: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{}/{}/{}/aws4_request\n{}",
        auth.date,
        auth.region,
        auth.service,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The HMAC keyed with the derived signing key (date → region → service → `aws4_request`).
fn signing_mac(secret: &str, auth: &Authorization) -> Option<HmacSha256> {
    let mut key = format!("AWS4{secret}").into_bytes();
    for part in [
        auth.date.as_str(),
        auth.region.as_str(),
        auth.service.as_str(),
        "aws4_request",
    ] {
        let mut mac = HmacSha256::new_from_slice(&key).ok()?;
        mac.update(part.as_bytes());
        key = mac.finalize().into_bytes().to_vec();
    }
    HmacSha256::new_from_slice(&key).ok()
}

/// Leading and trailing spaces removed, runs of spaces collapsed to one.
fn trim_all(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

/// The path normalized (dot segments and empty segments removed) and encoded a second time,
/// as every service but S3 expects: the path on the wire is already encoded once, so only
/// what is not unreserved — `%` above all — is encoded again.
fn canonical_path(raw: &str) -> String {
    let path = if raw.is_empty() { "/" } else { raw };
    let normalized = if path.contains('.') || path.contains("//") {
        let mut segments: Vec<&str> = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        let mut joined = format!("/{}", segments.join("/"));
        let trailing = ["/", "/.", "/..", "/./", "/../"]
            .iter()
            .any(|s| path.ends_with(s));
        if trailing && !joined.ends_with('/') {
            joined.push('/');
        }
        joined
    } else if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let mut out = String::with_capacity(normalized.len());
    for b in normalized.bytes() {
        if b == b'/' || is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every parameter decoded, re-encoded the AWS way (only unreserved characters left as they
/// are, `%20` for a space) and sorted by encoded name, then value.
fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn uri_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    /// The `get-vanilla` case of AWS's SigV4 test suite: a known secret, request and
    /// signature, so the derivation is checked against AWS's own numbers.
    #[test]
    fn matches_the_aws_test_suite() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        );
        let auth = parse_authorization(&headers).unwrap();
        assert_eq!(auth.access_key_id, "AKIDEXAMPLE");
        assert_eq!(auth.service, "service");
        let creq =
            canonical_request("GET", "/", None, &headers, &auth.signed_headers, b"").unwrap();
        assert_eq!(
            creq,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        assert!(verify(secret, &auth, "20150830T123600Z", &creq));
        assert!(!verify("wrong", &auth, "20150830T123600Z", &creq));
        let tampered = creq.replace("GET", "POST");
        assert!(!verify(secret, &auth, "20150830T123600Z", &tampered));
    }

    /// `post-x-www-form-urlencoded` and `get-vanilla-query-order-key-case` from the same
    /// suite: a signed form body, and query parameters sorted.
    #[test]
    fn matches_the_aws_test_suite_with_body_and_query() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        headers.insert("host", HeaderValue::from_static("example.amazonaws.com"));
        headers.insert("content-length", HeaderValue::from_static("13"));
        headers.insert(
            "x-amz-content-sha256",
            HeaderValue::from_static(
                "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e",
            ),
        );
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        let auth = Authorization {
            access_key_id: "AKIDEXAMPLE".into(),
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "service".into(),
            signed_headers: "content-length;content-type;host;x-amz-content-sha256;x-amz-date"
                .split(';')
                .map(str::to_owned)
                .collect(),
            signature: "d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b".into(),
        };
        let creq = canonical_request(
            "POST",
            "/",
            None,
            &headers,
            &auth.signed_headers,
            b"Param1=value1",
        )
        .unwrap();
        assert!(verify(secret, &auth, "20150830T123600Z", &creq));

        let auth = Authorization {
            signed_headers: vec!["host".into(), "x-amz-date".into()],
            signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500".into(),
            ..auth
        };
        let creq = canonical_request(
            "GET",
            "/",
            Some("Param2=value2&Param1=value1"),
            &headers,
            &auth.signed_headers,
            b"",
        )
        .unwrap();
        assert!(creq.contains("\nParam1=value1&Param2=value2\n"));
        assert!(verify(secret, &auth, "20150830T123600Z", &creq));
        assert_eq!(
            sign(secret, &auth, "20150830T123600Z", &creq).as_deref(),
            Some(auth.signature.as_str())
        );
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_path(""), "/");
        assert_eq!(canonical_path("/a/./b/../c//d/"), "/a/c/d/");
        assert_eq!(canonical_path("/a%20b"), "/a%2520b");
        assert_eq!(canonical_query("b=2&a=x+y&a=%7E&c"), "a=x%20y&a=~&b=2&c=");
        assert_eq!(trim_all("  a   b c  "), "a b c");
    }

    #[test]
    fn malformed_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(parse_authorization(&headers), Err(Malformed::Missing));
        headers.insert(
            "authorization",
            HeaderValue::from_static("AWS AKIDEXAMPLE:abc"),
        );
        assert!(matches!(
            parse_authorization(&headers),
            Err(Malformed::Incomplete(_))
        ));
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=x-amz-date, Signature=00",
            ),
        );
        assert!(matches!(
            parse_authorization(&headers),
            Err(Malformed::Incomplete(m)) if m.contains("Host")
        ));
        assert_eq!(access_key_id_of(&headers).as_deref(), Some("AKID"));
    }
}
