//! CloudTrail `LookupEvents` (event history), which moto does not implement, over the JSON
//! protocol the SDK speaks: `POST /` with `X-Amz-Target: CloudTrail_20131101.LookupEvents`
//! (what the SDKs send; the fully qualified
//! `com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents` is accepted too), an
//! `application/x-amz-json-1.1` body, SigV4 scoped to `cloudtrail`, answers as JSON and errors
//! as `{"__type", "message"}` with the service's exception names.
//!
//! Behaviour, as documented for the service:
//! - events are those loaded into the state ([`super::AwsState::load_cloudtrail_records`]),
//!   each answered as `{EventId, EventName, ReadOnly, AccessKeyId, EventTime (epoch seconds),
//!   EventSource, Username, Resources: [], CloudTrailEvent: "<the record as JSON text>"}`,
//!   newest first (ties by event id);
//! - `LookupAttributes`: at most one; `AccessKeyId`, `EventId`, `EventName`, `EventSource`,
//!   `Username` and `ReadOnly` compare for equality (`ResourceType` and `ResourceName` are
//!   refused as unsupported by the simulator); more than one is
//!   `InvalidLookupAttributesException`;
//! - `StartTime` and `EndTime` (epoch seconds) bound the event time, both inclusive; a start
//!   after the end is `InvalidTimeRangeException`;
//! - `MaxResults` 1–50 (default 50), else `InvalidMaxResultsException`;
//! - `NextToken` is opaque, bound to the query that issued it (another query's token is
//!   `InvalidNextTokenException`) and names the first event of the next page;
//! - only an administrator may call it (`AccessDeniedException` otherwise);
//! - unlike AWS, the simulator forgets nothing after 90 days: tests load old datasets, and the
//!   90-day clamp is the client's business.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::api::ApiError;
use super::state::{Access, AwsState};

/// Whether `X-Amz-Target` names a CloudTrail operation.
pub(crate) fn is_cloudtrail_target(target: &str) -> bool {
    let short = target
        .strip_prefix("com.amazonaws.cloudtrail.v20131101.")
        .unwrap_or(target);
    short.starts_with("CloudTrail_20131101.")
}

/// LookupEvents' largest page.
pub const MAX_RESULTS: usize = 50;

/// One event of the event history.
#[derive(Debug, Clone, PartialEq)]
pub struct TrailEvent {
    pub time: DateTime<Utc>,
    pub event_id: String,
    pub event_name: String,
    pub event_source: String,
    pub access_key_id: Option<String>,
    pub username: Option<String>,
    pub read_only: Option<bool>,
    /// The record as CloudTrail delivers it, as JSON text.
    pub record: String,
}

impl TrailEvent {
    /// The event of one CloudTrail record (`None` without `eventTime` or `eventID`).
    pub fn from_record(record: &Value) -> Option<TrailEvent> {
        let s = |path: &[&str]| -> Option<String> {
            let mut v = record;
            for p in path {
                v = v.get(p)?;
            }
            v.as_str().map(str::to_owned)
        };
        let time = DateTime::parse_from_rfc3339(&s(&["eventTime"])?)
            .ok()?
            .with_timezone(&Utc);
        let username = s(&["userIdentity", "userName"])
            .or_else(|| {
                s(&[
                    "userIdentity",
                    "sessionContext",
                    "sessionIssuer",
                    "userName",
                ])
            })
            .or_else(|| s(&["userIdentity", "principalId"]));
        Some(TrailEvent {
            time,
            event_id: s(&["eventID"])?,
            event_name: s(&["eventName"]).unwrap_or_default(),
            event_source: s(&["eventSource"]).unwrap_or_default(),
            access_key_id: s(&["userIdentity", "accessKeyId"]),
            username,
            read_only: record.get("readOnly").and_then(Value::as_bool),
            record: record.to_string(),
        })
    }

    fn attribute(&self, key: &str) -> Option<String> {
        match key {
            "AccessKeyId" => self.access_key_id.clone(),
            "EventId" => Some(self.event_id.clone()),
            "EventName" => Some(self.event_name.clone()),
            "EventSource" => Some(self.event_source.clone()),
            "Username" => self.username.clone(),
            "ReadOnly" => self.read_only.map(|b| b.to_string()),
            _ => None,
        }
    }

    /// The sort key, newest first: descending time, then event id.
    fn sort_key(&self) -> (i64, String) {
        (-self.time.timestamp_millis(), self.event_id.clone())
    }

    fn to_json(&self) -> Value {
        json!({
            "EventId": self.event_id,
            "EventName": self.event_name,
            "ReadOnly": self.read_only.map(|b| b.to_string()),
            "AccessKeyId": self.access_key_id,
            "EventTime": self.time.timestamp_millis() as f64 / 1000.0,
            "EventSource": self.event_source,
            "Username": self.username,
            "Resources": [],
            "CloudTrailEvent": self.record,
        })
    }
}

/// The events of a CloudTrail delivery (`{"Records": […]}`); records without a time or id are
/// skipped.
pub fn events_of_delivery(json: &str) -> Result<Vec<TrailEvent>, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let records = doc
        .get("Records")
        .and_then(Value::as_array)
        .ok_or("no Records array")?;
    Ok(records.iter().filter_map(TrailEvent::from_record).collect())
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// A JSON-protocol answer.
pub(crate) fn json_response(status: StatusCode, body: &Value, request_id: &str) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

/// A JSON-protocol error: the Query protocol's authentication codes become the JSON services'
/// exception names.
pub(crate) fn error_response(error: &ApiError, request_id: &str) -> Response {
    let code = match error.code {
        "InvalidClientTokenId" => "UnrecognizedClientException",
        "SignatureDoesNotMatch" => "InvalidSignatureException",
        "MissingAuthenticationToken" => "MissingAuthenticationTokenException",
        "IncompleteSignature" => "IncompleteSignatureException",
        "Throttling" => "ThrottlingException",
        other => other,
    };
    let status = if code == "ThrottlingException" {
        StatusCode::BAD_REQUEST
    } else {
        error.status
    };
    let mut response = json_response(
        status,
        &json!({"__type": code, "message": error.message}),
        request_id,
    );
    if let Ok(v) = HeaderValue::from_str(code) {
        response.headers_mut().insert("x-amzn-errortype", v);
    }
    response
}

/// Runs CloudTrail operation `operation` for `user`.
pub(crate) fn dispatch(
    state: &AwsState,
    user: &str,
    operation: &str,
    body: &[u8],
) -> Result<Value, ApiError> {
    match operation {
        "LookupEvents" => lookup_events(state, user, body),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            format!("The simulator does not implement CloudTrail {operation}"),
        )),
    }
}

fn lookup_events(state: &AwsState, user: &str, body: &[u8]) -> Result<Value, ApiError> {
    let me = state.user_named(user).ok_or_else(ApiError::invalid_token)?;
    if me.access != Access::Admin {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            format!(
                "User: {} is not authorized to perform: cloudtrail:LookupEvents because no identity-based policy allows the cloudtrail:LookupEvents action",
                me.arn
            ),
        ));
    }
    let input: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "SerializationException",
                "Start of structure or map found where not expected.",
            )
        })?
    };
    let attributes = input
        .get("LookupAttributes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if attributes.len() > 1 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidLookupAttributesException",
            "You cannot specify more than one lookup attribute.",
        ));
    }
    let attribute = match attributes.first() {
        None => None,
        Some(a) => {
            let key = a.get("AttributeKey").and_then(Value::as_str).unwrap_or("");
            let value = a
                .get("AttributeValue")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !matches!(
                key,
                "AccessKeyId" | "EventId" | "EventName" | "EventSource" | "Username" | "ReadOnly"
            ) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "InvalidLookupAttributesException",
                    format!("Lookup attribute key {key} is not supported by the simulator."),
                ));
            }
            if value.is_empty() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "InvalidLookupAttributesException",
                    "The lookup attribute value must not be empty.",
                ));
            }
            Some((key.to_owned(), value.to_owned()))
        }
    };
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        match input.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|secs| Some((secs * 1000.0) as i64))
                .ok_or_else(|| {
                    error(
                        StatusCode::BAD_REQUEST,
                        "SerializationException",
                        format!("{name} must be a timestamp (epoch seconds)"),
                    )
                }),
        }
    };
    let start = time("StartTime")?;
    let end = time("EndTime")?;
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidTimeRangeException",
            "Start time must be before end time.",
        ));
    }
    let max = match input.get("MaxResults") {
        None | Some(Value::Null) => MAX_RESULTS,
        Some(v) => match v.as_i64() {
            Some(n) if (1..=MAX_RESULTS as i64).contains(&n) => n as usize,
            _ => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "InvalidMaxResultsException",
                    "MaxResults must be between 1 and 50.",
                ));
            }
        },
    };
    let query = format!(
        "{}|{}|{}",
        attribute
            .as_ref()
            .map(|(k, v)| format!("{k}={v}"))
            .unwrap_or_default(),
        start.map(|s| s.to_string()).unwrap_or_default(),
        end.map(|e| e.to_string()).unwrap_or_default()
    );
    let resume: Option<(i64, String)> = match input.get("NextToken").and_then(Value::as_str) {
        None | Some("") => None,
        Some(token) => Some(decode_token(&query, token).ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "InvalidNextTokenException",
                "Invalid NextToken",
            )
        })?),
    };
    let mut matching: Vec<&TrailEvent> = state
        .trail_events()
        .iter()
        .filter(|e| {
            let ms = e.time.timestamp_millis();
            start.is_none_or(|s| ms >= s)
                && end.is_none_or(|x| ms <= x)
                && attribute
                    .as_ref()
                    .is_none_or(|(k, v)| e.attribute(k).as_deref() == Some(v.as_str()))
        })
        .collect();
    matching.sort_by_key(|e| e.sort_key());
    let mut rest = matching
        .into_iter()
        .filter(|e| resume.as_ref().is_none_or(|r| e.sort_key() >= *r))
        .peekable();
    let page: Vec<Value> = rest.by_ref().take(max).map(TrailEvent::to_json).collect();
    let mut out = json!({ "Events": page });
    if let Some(next) = rest.peek() {
        out["NextToken"] = Value::String(encode_token(&query, &next.sort_key()));
    }
    Ok(out)
}

fn encode_token(query: &str, key: &(i64, String)) -> String {
    hex::encode(format!("{query}\n{}\n{}", key.0, key.1))
}

fn decode_token(query: &str, token: &str) -> Option<(i64, String)> {
    let raw = String::from_utf8(hex::decode(token).ok()?).ok()?;
    let mut parts = raw.splitn(3, '\n');
    let issued_for = parts.next()?;
    let ms = parts.next()?.parse().ok()?;
    let id = parts.next()?.to_owned();
    (issued_for == query).then_some((ms, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_query() {
        let t = encode_token("AccessKeyId=A||", &(-5, "e1".into()));
        assert_eq!(
            decode_token("AccessKeyId=A||", &t),
            Some((-5, "e1".to_owned()))
        );
        assert_eq!(decode_token("AccessKeyId=B||", &t), None);
        assert_eq!(decode_token("AccessKeyId=A||", "zz"), None);
    }

    #[test]
    fn records_become_events() {
        let e = events_of_delivery(
            r#"{"Records":[{"eventTime":"2023-07-10T11:43:34Z","eventID":"x","eventName":"ListUsers","eventSource":"iam.amazonaws.com","readOnly":true,"userIdentity":{"accessKeyId":"AKIA1","userName":"b"}},{"eventName":"no time"}]}"#,
        )
        .unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].access_key_id.as_deref(), Some("AKIA1"));
        assert_eq!(e[0].attribute("ReadOnly").as_deref(), Some("true"));
        assert_eq!(e[0].username.as_deref(), Some("b"));
    }
}
