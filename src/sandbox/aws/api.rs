//! The AWS Query protocol as IAM and STS speak it: `Action=…&Version=…` parameters (form body
//! or query string), SigV4 authentication, answers as `<{Action}Response>` XML documents and
//! errors as `<ErrorResponse>` with AWS's codes and statuses. Shapes follow the services'
//! models (the ones the SDK deserializes with), so the real SDK parses every answer into its
//! typed outputs and errors.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};

use super::sigv4::{self, Malformed};
use super::state::{
    Access, AwsState, KeyStatus, LastUsed, MAX_KEYS_PER_USER, StoredKey, StoredUser,
};

pub(crate) const IAM_VERSION: &str = "2010-05-08";
pub(crate) const STS_VERSION: &str = "2011-06-15";

/// `ListUsers` and `ListAccessKeys` page size when `MaxItems` is not given, as in IAM.
const DEFAULT_MAX_ITEMS: usize = 100;

/// The request parameters rekey's tests may look at in the request log. None of the simulated
/// actions takes a secret, and this list keeps it that way should one be added.
pub(crate) const LOGGED_PARAMS: &[&str] = &[
    "UserName",
    "AccessKeyId",
    "Status",
    "Marker",
    "MaxItems",
    "PathPrefix",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Iam,
    Sts,
    /// CloudTrail, over the JSON protocol (see `super::cloudtrail`).
    Cloudtrail,
}

impl Service {
    /// From the credential scope's service.
    pub fn from_scope(name: &str) -> Option<Service> {
        match name {
            "iam" => Some(Service::Iam),
            "sts" => Some(Service::Sts),
            "cloudtrail" => Some(Service::Cloudtrail),
            _ => None,
        }
    }

    /// For requests without a usable scope: STS's one action, IAM otherwise.
    pub fn guess(action: Option<&str>) -> Service {
        match action {
            Some("GetCallerIdentity") => Service::Sts,
            Some("LookupEvents") => Service::Cloudtrail,
            _ => Service::Iam,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::Iam => "iam",
            Service::Sts => "sts",
            Service::Cloudtrail => "cloudtrail",
        }
    }

    fn namespace(self) -> &'static str {
        match self {
            Service::Iam => "https://iam.amazonaws.com/doc/2010-05-08/",
            Service::Sts => "https://sts.amazonaws.com/doc/2011-06-15/",
            Service::Cloudtrail => "https://cloudtrail.amazonaws.com/doc/2013-11-01/",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Service::Iam => IAM_VERSION,
            Service::Sts => STS_VERSION,
            Service::Cloudtrail => "2013-11-01",
        }
    }
}

/// An error as AWS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn invalid_token() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        )
    }

    pub fn signature_mismatch(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", message)
    }

    pub fn throttling() -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded")
    }

    pub fn internal_failure() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        )
    }

    fn validation(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }

    fn no_such_user(name: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NoSuchEntity",
            format!("The user with name {name} cannot be found."),
        )
    }

    fn no_such_key(id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NoSuchEntity",
            format!("The Access Key with id {id} cannot be found."),
        )
    }

    fn invalid_action(action: &str, version: Option<&str>) -> Self {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!(
                "Could not find operation {action} for version {}",
                version.unwrap_or("NO_VERSION_SPECIFIED")
            ),
        )
    }

    fn access_denied(caller: &StoredUser, action: &str, resource: &str) -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            format!(
                "User: {} is not authorized to perform: iam:{action} on resource: {resource} \
                 because no identity-based policy allows the iam:{action} action",
                caller.arn
            ),
        )
    }

    /// `Sender` for the client's mistakes, `Receiver` for the service's.
    fn fault_type(&self) -> &'static str {
        if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        }
    }
}

/// The parameters of a request: the query string's, then the form body's, first value wins.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub fn parse(query: Option<&str>, body: &[u8]) -> Params {
        let mut map = BTreeMap::new();
        let query = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes());
        for (k, v) in query.chain(url::form_urlencoded::parse(body)) {
            map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Params(map)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Only the [`LOGGED_PARAMS`].
    pub fn loggable(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter(|(k, _)| LOGGED_PARAMS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Who signed a request that authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The user's name as created.
    pub user: String,
    pub service: Service,
}

/// Why a request did not authenticate, and which service's namespace to answer in.
pub(crate) type Refusal = (Service, ApiError);

/// Checks the signature and the key, in AWS's order: a key unknown, deleted, not yet
/// propagated or Inactive is `InvalidClientTokenId` whatever the signature; then the date;
/// then the signature. On success the key's last use is recorded.
pub(crate) fn authenticate(
    state: &mut AwsState,
    request: &RequestParts<'_>,
    action: Option<&str>,
) -> Result<Caller, Refusal> {
    let fallback = Service::guess(action);
    let auth = match sigv4::parse_authorization(request.headers) {
        Ok(auth) => auth,
        Err(Malformed::Missing) => {
            return Err((
                fallback,
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "MissingAuthenticationToken",
                    "Request is missing Authentication Token",
                ),
            ));
        }
        Err(Malformed::Incomplete(message)) => {
            return Err((
                fallback,
                ApiError::new(StatusCode::BAD_REQUEST, "IncompleteSignature", message),
            ));
        }
    };
    // In AWS the host name picks the service; here one endpoint serves both, so the scope
    // does, and a scope for any other service cannot be answered.
    let Some(service) = Service::from_scope(&auth.service) else {
        return Err((
            fallback,
            ApiError::signature_mismatch(format!(
                "Credential should be scoped to correct service: 'iam', 'sts' or 'cloudtrail', not '{}'.",
                auth.service
            )),
        ));
    };
    let Some((amz_date, sent_at)) = sigv4::request_time(request.headers) else {
        return Err((
            service,
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "IncompleteSignature",
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' \
                 header.",
            ),
        ));
    };
    if request.headers.contains_key("x-amz-security-token") {
        // The simulator issues no temporary credentials, so no session token can be valid.
        return Err((service, ApiError::invalid_token()));
    }

    let Some(key) = state.stored_key_mut(&auth.access_key_id) else {
        return Err((service, ApiError::invalid_token()));
    };
    if let Some(pending) = &mut key.pending {
        let waiting = pending.usable_at.is_some_and(|at| request.now < at);
        if pending.rejections_left > 0 || waiting {
            pending.rejections_left = pending.rejections_left.saturating_sub(1);
            return Err((service, ApiError::invalid_token()));
        }
        key.pending = None;
    }
    if key.status != KeyStatus::Active {
        return Err((service, ApiError::invalid_token()));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err((
            service,
            ApiError::signature_mismatch(format!(
                "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date \
                 from HTTP: '{}' != '{}', from '{amz_date}'.",
                auth.date,
                amz_date.get(..8).unwrap_or_default()
            )),
        ));
    }
    let now = Utc::now();
    if sent_at < now - sigv4::MAX_SKEW {
        return Err((
            service,
            ApiError::signature_mismatch(format!(
                "Signature expired: {amz_date} is now earlier than {} ({} - 15 min.)",
                amz_format(now - sigv4::MAX_SKEW),
                amz_format(now)
            )),
        ));
    }
    if sent_at > now + sigv4::MAX_SKEW {
        return Err((
            service,
            ApiError::signature_mismatch(format!(
                "Signature not yet current: {amz_date} is still later than {} ({} + 15 min.)",
                amz_format(now + sigv4::MAX_SKEW),
                amz_format(now)
            )),
        ));
    }
    let verified = sigv4::canonical_request(
        request.method,
        request.path,
        request.query,
        request.headers,
        &auth.signed_headers,
        request.body,
    )
    .is_some_and(|creq| sigv4::verify(key.secret.expose(), &auth, &amz_date, &creq));
    if !verified {
        return Err((
            service,
            ApiError::signature_mismatch(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service \
                 documentation for details.",
            ),
        ));
    }
    key.last_used = Some(LastUsed {
        at: super::state::now_seconds(),
        service: auth.service.clone(),
        region: auth.region.clone(),
    });
    Ok(Caller {
        user: key.user.clone(),
        service,
    })
}

/// What the authentication needs of a request.
pub(crate) struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub now: Instant,
}

/// Runs `action` for `caller` and answers the XML body of its response.
pub(crate) fn dispatch(
    state: &mut AwsState,
    caller: &Caller,
    action: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let service = caller.service;
    let version = params.get("Version");
    if version != Some(service.version()) {
        return Err(ApiError::invalid_action(action, version));
    }
    let Some(me) = state.user_named(&caller.user).cloned() else {
        // The caller's user was removed behind the API's back while its key remained.
        return Err(ApiError::invalid_token());
    };
    let result = match (service, action) {
        (Service::Sts, "GetCallerIdentity") => Some(format!(
            "<Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account>",
            esc(&me.arn),
            esc(&me.user_id),
            esc(state.account_id())
        )),
        (Service::Iam, "ListUsers") => Some(list_users(state, &me, params)?),
        (Service::Iam, "GetUser") => {
            let user = target_user(state, &me, "GetUser", params)?;
            Some(format!("<User>{}</User>", user_xml(&user)))
        }
        (Service::Iam, "ListAccessKeys") => Some(list_access_keys(state, &me, params)?),
        (Service::Iam, "GetAccessKeyLastUsed") => {
            Some(get_access_key_last_used(state, &me, params)?)
        }
        (Service::Iam, "CreateAccessKey") => {
            let user = target_user(state, &me, "CreateAccessKey", params)?;
            if state.key_count(&user.name) >= MAX_KEYS_PER_USER {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "LimitExceeded",
                    format!("Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}"),
                ));
            }
            let key = state.mint_key(&user.name);
            Some(format!(
                "<AccessKey><UserName>{}</UserName><AccessKeyId>{}</AccessKeyId>\
                 <Status>{}</Status><SecretAccessKey>{}</SecretAccessKey>\
                 <CreateDate>{}</CreateDate></AccessKey>",
                esc(&key.user),
                esc(&key.id),
                key.status.as_str(),
                esc(key.secret.expose()),
                iso(key.created_at)
            ))
        }
        (Service::Iam, "UpdateAccessKey") => {
            let status_param = required(params, "Status", "status")?;
            let Some(status) = KeyStatus::parse(status_param) else {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{status_param}' at 'status' failed to \
                     satisfy constraint: Member must satisfy enum value set: [Active, Inactive, \
                     Expired]"
                )));
            };
            let id = owned_key(state, &me, "UpdateAccessKey", params)?;
            if let Some(key) = state.stored_key_mut(&id) {
                key.status = status;
            }
            None
        }
        (Service::Iam, "DeleteAccessKey") => {
            let id = owned_key(state, &me, "DeleteAccessKey", params)?;
            state.delete_key(&id);
            None
        }
        _ => return Err(ApiError::invalid_action(action, version)),
    };
    Ok(envelope(service, action, result.as_deref(), request_id))
}

/// `<{Action}Response>`, with `<{Action}Result>` when the action returns something.
fn envelope(service: Service, action: &str, result: Option<&str>, request_id: &str) -> String {
    let result = match result {
        Some(inner) => format!("<{action}Result>{inner}</{action}Result>"),
        None => String::new(),
    };
    format!(
        "<{action}Response xmlns=\"{ns}\">{result}<ResponseMetadata><RequestId>{id}</RequestId>\
         </ResponseMetadata></{action}Response>",
        ns = service.namespace(),
        id = esc(request_id),
    )
}

/// An answer with AWS's headers (the SDK reads the request id from `x-amzn-RequestId`).
pub(crate) fn xml_response(status: StatusCode, body: String, request_id: &str) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("text/xml"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

pub(crate) fn error_response(service: Service, error: &ApiError, request_id: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"{ns}\"><Error><Type>{kind}</Type><Code>{code}</Code>\
         <Message>{message}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>",
        ns = service.namespace(),
        kind = error.fault_type(),
        code = error.code,
        message = esc(&error.message),
        id = esc(request_id),
    );
    xml_response(error.status, body, request_id)
}

/// Whether `me` may run `action` on `target` (a user name), under its [`Access`].
fn allowed(me: &StoredUser, action: &str, target: Option<&str>) -> bool {
    match me.access {
        Access::Admin => true,
        Access::None => false,
        Access::OwnKeys => {
            matches!(
                action,
                "GetUser"
                    | "ListAccessKeys"
                    | "GetAccessKeyLastUsed"
                    | "CreateAccessKey"
                    | "UpdateAccessKey"
                    | "DeleteAccessKey"
            ) && target.is_some_and(|t| t.eq_ignore_ascii_case(&me.name))
        }
    }
}

/// The user's ARN, or the one it would have at the root path when it does not exist.
fn user_arn(state: &AwsState, name: &str) -> String {
    match state.user_named(name) {
        Some(user) => user.arn.clone(),
        None => format!("arn:aws:iam::{}:user/{name}", state.account_id()),
    }
}

/// The user an action is about: `UserName`, or the caller when it is absent — after the
/// permission check, so a caller that may not act learns nothing about other users.
fn target_user(
    state: &AwsState,
    me: &StoredUser,
    action: &str,
    params: &Params,
) -> Result<StoredUser, ApiError> {
    let name = match params.get("UserName") {
        Some(name) => {
            check_user_name(name)?;
            name
        }
        None => me.name.as_str(),
    };
    if !allowed(me, action, Some(name)) {
        return Err(ApiError::access_denied(me, action, &user_arn(state, name)));
    }
    state
        .user_named(name)
        .cloned()
        .ok_or_else(|| ApiError::no_such_user(name))
}

/// The `AccessKeyId` of an Update/Delete, checked to belong to the target user.
fn owned_key(
    state: &AwsState,
    me: &StoredUser,
    action: &str,
    params: &Params,
) -> Result<String, ApiError> {
    let id = required(params, "AccessKeyId", "accessKeyId")?;
    check_key_id(id)?;
    let user = target_user(state, me, action, params)?;
    match state.stored_key(id) {
        Some(key) if key.user.eq_ignore_ascii_case(&user.name) => Ok(key.id.clone()),
        _ => Err(ApiError::no_such_key(id)),
    }
}

fn list_users(state: &AwsState, me: &StoredUser, params: &Params) -> Result<String, ApiError> {
    if !allowed(me, "ListUsers", None) {
        let resource = format!("arn:aws:iam::{}:user/", state.account_id());
        return Err(ApiError::access_denied(me, "ListUsers", &resource));
    }
    let prefix = params.get("PathPrefix").unwrap_or("/");
    let items: Vec<(String, &StoredUser)> = state
        .stored_users()
        .filter(|u| u.path.starts_with(prefix))
        .map(|u| (u.name.to_lowercase(), u))
        .collect();
    let page = Page::read(params)?;
    let (users, marker) = page.take(&format!("ListUsers{prefix}"), items)?;
    let members: String = users
        .iter()
        .map(|u| format!("<member>{}</member>", user_xml(u)))
        .collect();
    Ok(format!(
        "<IsTruncated>{}</IsTruncated><Users>{members}</Users>{}",
        marker.is_some(),
        marker_xml(marker.as_deref())
    ))
}

fn list_access_keys(
    state: &AwsState,
    me: &StoredUser,
    params: &Params,
) -> Result<String, ApiError> {
    let user = target_user(state, me, "ListAccessKeys", params)?;
    let items: Vec<(String, &StoredKey)> = state
        .stored_keys_of(&user.name)
        .into_iter()
        .map(|k| (format!("{:016x}", k.seq), k))
        .collect();
    let page = Page::read(params)?;
    let (keys, marker) = page.take(
        &format!("ListAccessKeys/{}", user.name.to_lowercase()),
        items,
    )?;
    let members: String = keys
        .iter()
        .map(|k| {
            format!(
                "<member><UserName>{}</UserName><AccessKeyId>{}</AccessKeyId>\
                 <Status>{}</Status><CreateDate>{}</CreateDate></member>",
                esc(&k.user),
                esc(&k.id),
                k.status.as_str(),
                iso(k.created_at)
            )
        })
        .collect();
    Ok(format!(
        "<AccessKeyMetadata>{members}</AccessKeyMetadata><IsTruncated>{}</IsTruncated>{}",
        marker.is_some(),
        marker_xml(marker.as_deref())
    ))
}

fn get_access_key_last_used(
    state: &AwsState,
    me: &StoredUser,
    params: &Params,
) -> Result<String, ApiError> {
    let id = required(params, "AccessKeyId", "accessKeyId")?;
    check_key_id(id)?;
    // A key that is not in the account belongs to no user a policy could grant: denied,
    // whoever asks.
    let Some(key) = state.stored_key(id) else {
        return Err(ApiError::access_denied(
            me,
            "GetAccessKeyLastUsed",
            &format!("access key {id}"),
        ));
    };
    if !allowed(me, "GetAccessKeyLastUsed", Some(&key.user)) {
        return Err(ApiError::access_denied(
            me,
            "GetAccessKeyLastUsed",
            &format!("access key {id}"),
        ));
    }
    let used = match &key.last_used {
        Some(used) => format!(
            "<LastUsedDate>{}</LastUsedDate><ServiceName>{}</ServiceName><Region>{}</Region>",
            iso(used.at),
            esc(&used.service),
            esc(&used.region)
        ),
        None => "<ServiceName>N/A</ServiceName><Region>N/A</Region>".to_owned(),
    };
    Ok(format!(
        "<UserName>{}</UserName><AccessKeyLastUsed>{used}</AccessKeyLastUsed>",
        esc(&key.user)
    ))
}

fn user_xml(user: &StoredUser) -> String {
    format!(
        "<Path>{}</Path><UserName>{}</UserName><UserId>{}</UserId><Arn>{}</Arn>\
         <CreateDate>{}</CreateDate>",
        esc(&user.path),
        esc(&user.name),
        esc(&user.user_id),
        esc(&user.arn),
        iso(user.created_at)
    )
}

fn marker_xml(marker: Option<&str>) -> String {
    marker
        .map(|m| format!("<Marker>{}</Marker>", esc(m)))
        .unwrap_or_default()
}

/// `Marker` and `MaxItems` of a listing. Markers are opaque to clients and bound to the
/// listing that issued them; they name the first item of the next page, so that items
/// deleted between two pages do not shift the rest.
struct Page {
    marker: Option<String>,
    max_items: usize,
}

impl Page {
    fn read(params: &Params) -> Result<Page, ApiError> {
        let max_items = match params.get("MaxItems") {
            None => DEFAULT_MAX_ITEMS,
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if (1..=1000).contains(&n) => n as usize,
                Ok(n) if n < 1 => {
                    return Err(ApiError::validation(format!(
                        "1 validation error detected: Value '{n}' at 'maxItems' failed to \
                         satisfy constraint: Member must have value greater than or equal to 1"
                    )));
                }
                Ok(n) => {
                    return Err(ApiError::validation(format!(
                        "1 validation error detected: Value '{n}' at 'maxItems' failed to \
                         satisfy constraint: Member must have value less than or equal to 1000"
                    )));
                }
                Err(_) => {
                    return Err(ApiError::validation(format!(
                        "Invalid value for parameter MaxItems: '{raw}' is not an integer"
                    )));
                }
            },
        };
        Ok(Page {
            marker: params.get("Marker").map(str::to_owned),
            max_items,
        })
    }

    /// The page of `items` (sorted by their sort keys) and the marker of the next page.
    fn take<T>(
        &self,
        listing: &str,
        mut items: Vec<(String, T)>,
    ) -> Result<(Vec<T>, Option<String>), ApiError> {
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let start = match &self.marker {
            None => String::new(),
            Some(marker) => decode_marker(listing, marker)
                .ok_or_else(|| ApiError::validation("Invalid value for parameter Marker"))?,
        };
        let mut rest = items.into_iter().filter(|(k, _)| *k >= start).peekable();
        let page: Vec<T> = rest
            .by_ref()
            .take(self.max_items)
            .map(|(_, item)| item)
            .collect();
        let next = rest.peek().map(|(k, _)| encode_marker(listing, k));
        Ok((page, next))
    }
}

fn encode_marker(listing: &str, sort_key: &str) -> String {
    hex::encode_upper(format!("{listing}\n{sort_key}"))
}

fn decode_marker(listing: &str, marker: &str) -> Option<String> {
    let raw = String::from_utf8(hex::decode(marker).ok()?).ok()?;
    let (issued_for, sort_key) = raw.split_once('\n')?;
    (issued_for == listing).then(|| sort_key.to_owned())
}

fn required<'a>(params: &'a Params, name: &str, member: &str) -> Result<&'a str, ApiError> {
    params.get(name).ok_or_else(|| {
        ApiError::validation(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy \
             constraint: Member must not be null"
        ))
    })
}

fn check_user_name(name: &str) -> Result<(), ApiError> {
    // Lookups accept up to 128 characters (creation allows 64): a longer name cannot exist,
    // but is not malformed.
    let valid = (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "1 validation error detected: Value '{name}' at 'userName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+"
        )))
    }
}

fn check_key_id(id: &str) -> Result<(), ApiError> {
    if (16..=128).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "1 validation error detected: Value '{id}' at 'accessKeyId' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: [\\w]+"
        )))
    }
}

/// ISO 8601 to the second, as IAM writes dates.
fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn amz_format(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// XML character escaping for text and attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_xml() {
        assert_eq!(esc("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
    }

    #[test]
    fn markers_are_bound_to_their_listing() {
        let items = |n: usize| -> Vec<(String, usize)> {
            (0..n).map(|i| (format!("{i:016x}"), i)).collect()
        };
        let page = Page {
            marker: None,
            max_items: 2,
        };
        let (first, marker) = page.take("ListAccessKeys/a", items(3)).unwrap();
        assert_eq!(first, vec![0, 1]);
        let marker = marker.unwrap();
        let next = Page {
            marker: Some(marker.clone()),
            max_items: 2,
        };
        let (second, end) = next.take("ListAccessKeys/a", items(3)).unwrap();
        assert_eq!((second, end), (vec![2], None));
        assert_eq!(
            next.take("ListAccessKeys/b", items(3)).unwrap_err().code,
            "ValidationError"
        );
        // The item the marker names was deleted: the page starts at the next one.
        let mut fewer = items(4);
        fewer.remove(2);
        let (after_delete, _) = next.take("ListAccessKeys/a", fewer).unwrap();
        assert_eq!(after_delete, vec![3]);
    }

    #[test]
    fn params_merge_query_and_body() {
        let p = Params::parse(
            Some("Action=ListUsers&Version=2010-05-08"),
            b"Action=GetUser&UserName=a%2Bb&Secret=x",
        );
        assert_eq!(p.get("Action"), Some("ListUsers"));
        assert_eq!(p.get("UserName"), Some("a+b"));
        let logged = p.loggable();
        assert!(logged.contains_key("UserName"));
        assert!(!logged.contains_key("Secret"));
    }

    #[test]
    fn error_document_shape() {
        let response = error_response(Service::Iam, &ApiError::no_such_user("x&y"), "rid");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["x-amzn-requestid"], "rid");
    }
}
