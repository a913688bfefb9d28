//! Audit logs fetched from the platforms' APIs while the hunt runs: CloudTrail log files in S3
//! and LookupEvents, the GitHub organization audit log, GCP Cloud Logging, Microsoft Graph
//! sign-ins and the Azure Activity Log. Each fetcher turns responses into [`Page`]s — the
//! response body as the platform sent it, named by where it came from — and sends them down a
//! bounded channel to the hunt's workers, which read them exactly as they read the same records
//! saved to a file (`source::read_from`). So a hunt over an export and a hunt over the API find
//! the same things, and memory follows the channel's look-ahead, not the input.

//!
//! One module per API, each owning its requests, pagination and retention limits: [`s3`]
//! (CloudTrail files in a bucket), [`lookup_events`] (CloudTrail LookupEvents), [`github`]
//! (organization audit log), [`gcp`] (Cloud Logging `entries:list`), [`azure`] (Graph
//! sign-ins, Activity Log). What they share lives here: the page channel, the window, the
//! endpoints and credentials, and [`Http`] (the project's retry policy, bounded error texts
//! with every token redacted).
//!
//! A page that cannot be fetched is never silently dropped: it becomes an entry of the
//! report's `incomplete` list with the URL or page it was, so that a hunt that could not read
//! a source does not look clean (`rekey hunt` exits 1 then, unless findings already ask for 3).

pub mod azure;
pub mod gcp;
pub mod github;
pub mod lookup_events;
pub mod s3;

use super::bounded;
use super::engine::{self, HuntOptions, PageFeed};
use super::fields::FieldSet;
use super::findings::HuntReport;
use super::pack::RuleSet;
use super::source::{Problem, Sink, Source};
use crate::http::RetryPolicy;
use crate::providers::azure::AzureIdentity;
use crate::providers::gcp::GcpAuth;
use crate::secret::Secret;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};

/// Pages a fetcher may run ahead of the workers.
const LOOK_AHEAD: usize = 8;

/// One response body, as received, and where it came from (`s3://bucket/key`,
/// `github:orgs/acme/audit-log page 3`, …): the location of its records in findings.
#[derive(Debug)]
pub struct Page {
    pub source: Source,
    pub name: String,
    pub body: Body,
}

/// A page's body: whole (an API answer, bounded by [`bounded::MAX_RECORD`]), or streamed
/// while the worker reads it (an S3 object, which may be as large as the bucket's writer
/// wants: it is never held whole).
#[derive(Debug)]
pub enum Body {
    Whole(Vec<u8>),
    Streamed {
        size: u64,
        chunks: Chunks,
    },
    /// Athena's result rows, read as records without being written as records first.
    Rows(super::athena::rows::Rows),
}

impl Body {
    /// Its size in bytes (as announced, for a stream; its cells', for rows).
    pub fn len(&self) -> u64 {
        match self {
            Body::Whole(b) => b.len() as u64,
            Body::Streamed { size, .. } => *size,
            Body::Rows(rows) => rows.bytes(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Page {
    /// Reads every record of the page into `sink`, on a worker thread (a stream blocks it
    /// until the next chunk arrives). `Err` when the body was not wholly read.
    pub fn read(self, set: &FieldSet, sink: &mut dyn Sink) -> std::io::Result<()> {
        let reader: Box<dyn std::io::Read + Send> = match self.body {
            Body::Whole(b) => Box::new(std::io::Cursor::new(b)),
            Body::Streamed { chunks, .. } => Box::new(chunks),
            Body::Rows(rows) => return super::athena::rows::read(&self.name, &rows, set, sink),
        };
        super::source::read_from(self.source, &self.name, reader, set, sink)
    }
}

/// The chunks of a streamed body, received as they are downloaded; an error is the download's.
#[derive(Debug)]
pub struct Chunks {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>,
    current: Vec<u8>,
    at: usize,
}

/// Chunks of a body that may wait downloaded for their worker.
const CHUNKS_AHEAD: usize = 4;

impl Chunks {
    /// A stream and the sender its download feeds.
    pub fn channel() -> (tokio::sync::mpsc::Sender<Result<Vec<u8>, String>>, Chunks) {
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        (
            tx,
            Chunks {
                rx,
                current: Vec::new(),
                at: 0,
            },
        )
    }
}

impl std::io::Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at >= self.current.len() {
            // Worker threads are outside the async runtime: blocking is what they are for.
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// CloudTrail log files under `s3://bucket/prefix` (aws-sdk-s3; the AWS default chain).
    S3 { bucket: String, prefix: String },
    /// CloudTrail LookupEvents for each access key id (aws-sdk-cloudtrail; management events,
    /// 90 days).
    LookupEvents { access_key_ids: Vec<String> },
    /// `GET /orgs/{org}/audit-log?include=all` (GitHub token), optionally narrowed by a phrase.
    GithubOrg { org: String, phrase: Option<String> },
    /// Cloud Logging `entries:list` in a project, optionally narrowed to one principal.
    GcpProject {
        project: String,
        principal: Option<String>,
    },
    /// Graph service-principal sign-ins, optionally of one application (appId).
    AzureSignins { app_id: Option<String> },
    /// Azure Activity Log events of a subscription.
    AzureActivity { subscription: String },
    /// The CloudTrail table in Athena: the rules compiled to SQL, the rows read as records
    /// ([`crate::hunt::athena`]).
    Athena(super::athena::Table),
}

impl Remote {
    pub fn source(&self) -> Source {
        match self {
            Remote::S3 { .. } | Remote::LookupEvents { .. } | Remote::Athena(_) => {
                Source::Cloudtrail
            }
            Remote::GithubOrg { .. } => Source::GithubAudit,
            Remote::GcpProject { .. } => Source::GcpLogging,
            Remote::AzureSignins { .. } => Source::AzureSignins,
            Remote::AzureActivity { .. } => Source::AzureActivity,
        }
    }

    /// `s3://bucket/prefix` as a remote; `None` when `text` is not an S3 URL.
    pub fn parse_s3(text: &str) -> Option<Result<Remote, String>> {
        let rest = text.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(format!("`{text}`: no bucket name after s3://")));
        }
        Some(Ok(Remote::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }))
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remote::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Remote::LookupEvents { access_key_ids } => {
                write!(f, "CloudTrail LookupEvents ({})", access_key_ids.join(", "))
            }
            Remote::GithubOrg { org, .. } => write!(f, "GitHub audit log of {org}"),
            Remote::GcpProject { project, .. } => write!(f, "Cloud Logging of {project}"),
            Remote::AzureSignins { .. } => f.write_str("Graph service-principal sign-ins"),
            Remote::AzureActivity { subscription } => {
                write!(f, "Activity Log of subscription {subscription}")
            }
            Remote::Athena(t) => t.fmt(f),
        }
    }
}

/// The time range asked of the APIs: the baseline before the incident start, up to `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

/// Where the APIs are; every one overridable (sandbox, tests, sovereign clouds).
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub github_api: String,
    pub gcp_logging: String,
    pub gcp_token: String,
    pub azure_authority: String,
    pub azure_graph: String,
    pub azure_management: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            github_api: std::env::var("GITHUB_API_URL")
                .unwrap_or_else(|_| "https://api.github.com".into()),
            gcp_logging: "https://logging.googleapis.com".into(),
            gcp_token: "https://oauth2.googleapis.com/token".into(),
            azure_authority: "https://login.microsoftonline.com".into(),
            azure_graph: "https://graph.microsoft.com/v1.0".into(),
            azure_management: "https://management.azure.com".into(),
        }
    }
}

impl Endpoints {
    /// These endpoints with the plan's `endpoints:` where it names one.
    pub fn with_plan(mut self, plan: &crate::plan::Endpoints) -> Endpoints {
        let set = |slot: &mut String, v: &Option<crate::plan::Located<String>>| {
            if let Some(v) = v {
                *slot = v.value.trim_end_matches('/').to_owned();
            }
        };
        set(&mut self.gcp_logging, &plan.gcp_logging);
        set(&mut self.gcp_token, &plan.gcp_token);
        set(&mut self.azure_authority, &plan.azure_authority);
        set(&mut self.azure_graph, &plan.azure_graph);
        set(&mut self.azure_management, &plan.azure_management);
        self
    }
}

/// What a fetcher has to say besides its pages: retention limits (notes), and pages it could
/// not get (problems: they make the hunt incomplete).
#[derive(Debug, Default)]
pub struct Fetched {
    pub notes: Vec<String>,
    pub problems: Vec<Problem>,
    /// Bytes a query engine scanned (Athena).
    pub bytes_scanned: u64,
    /// Only some records of each credential were fetched (Athena without credentials in
    /// scope): the per-credential baselines would be wrong, and are left out.
    pub partial_records: bool,
}

impl Fetched {
    fn failed(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            location: location.into(),
            message: message.into(),
        });
    }
}

/// Sends pages to the workers; `false` when they are gone (the hunt ended).
pub type PageSender = tokio::sync::mpsc::Sender<Page>;

/// Hands a page to the workers; `false` when they are gone (stop fetching).
async fn deliver(tx: &PageSender, source: Source, name: String, body: Vec<u8>) -> bool {
    let body = Body::Whole(body);
    tx.send(Page { source, name, body }).await.is_ok()
}

/// rekey's own credentials for the APIs, from the standard places (never from arguments).
#[derive(Clone, Default)]
pub struct Credentials {
    /// The AWS SDK configuration; `None`: the default chain (`AWS_ENDPOINT_URL` included),
    /// loaded when an AWS remote is fetched.
    pub aws: Option<aws_config::SdkConfig>,
    /// `GITHUB_TOKEN` or the keyring (`rekey auth set github`).
    pub github_token: Option<Secret>,
    /// `GOOGLE_OAUTH_ACCESS_TOKEN`, else the key file of `GOOGLE_APPLICATION_CREDENTIALS`.
    pub gcp: Option<GcpAuth>,
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`.
    pub azure: Option<AzureIdentity>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("aws", &self.aws.as_ref().map(|_| "configured"))
            .field(
                "github_token",
                &self.github_token.as_ref().map(|_| "[redacted]"),
            )
            .field("gcp", &self.gcp)
            .field("azure", &self.azure)
            .finish()
    }
}

impl Credentials {
    /// What the environment (and the keyring, for GitHub) holds for the remotes asked for. A
    /// GCP key file that is named but unreadable is an error (a typo must not look like "no
    /// credentials"); anything else missing is reported by the fetcher that needs it.
    pub fn from_env(remotes: &[Remote]) -> Result<Credentials, String> {
        let mut c = Credentials::default();
        if remotes
            .iter()
            .any(|r| matches!(r, Remote::GithubOrg { .. }))
        {
            c.github_token = crate::credentials::token(crate::credentials::Service::Github).ok();
        }
        if remotes
            .iter()
            .any(|r| matches!(r, Remote::GcpProject { .. }))
        {
            c.gcp = Some(GcpAuth::from_env()?);
        }
        if remotes.iter().any(|r| {
            matches!(
                r,
                Remote::AzureSignins { .. } | Remote::AzureActivity { .. }
            )
        }) {
            c.azure = AzureIdentity::from_env();
        }
        Ok(c)
    }

    /// The AWS configuration: the one given, else the default chain (region defaulting to
    /// us-east-1, where CloudTrail's global events are).
    pub async fn aws_config(&self) -> aws_config::SdkConfig {
        if let Some(c) = &self.aws {
            return c.clone();
        }
        let region = aws_config::meta::region::RegionProviderChain::default_provider()
            .or_else(aws_config::Region::new("us-east-1"));
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(region)
            .load()
            .await
    }
}

/// Everything the fetchers need besides the remote and the window.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub endpoints: Endpoints,
    pub credentials: Credentials,
    /// The project's HTTP retry policy (429 with `Retry-After`, 5xx, connection errors).
    pub retry: RetryPolicy,
    /// Records asked per page; `None`: each API's maximum. Tests lower it to see pagination.
    pub page_size: Option<u32>,
}

/// An HTTP client with the project's retry policy, for the REST fetchers (GitHub, GCP,
/// Azure). Error texts are bounded and never carry a token: every secret the caller names is
/// redacted from a quoted body, and transport errors are described without their URL.
pub(crate) struct Http {
    client: reqwest::Client,
    retry: RetryPolicy,
}

/// An answer of any status.
pub(crate) struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `HTTP 403: <the body, bounded, every secret redacted>`.
    pub fn error_text(&self, secrets: &[&str]) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let quoted: String = crate::providers::rest::quote(&text, secrets)
            .chars()
            .take(500)
            .collect();
        format!("HTTP {}: {quoted}", self.status.as_u16())
    }
}

impl Http {
    pub fn new(retry: RetryPolicy) -> Result<Http, String> {
        let client = crate::providers::rest::client().map_err(|e| e.to_string())?;
        Ok(Http { client, retry })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Sends what `build` makes with the retry policy (idempotent: these are all reads, GCP's
    /// `entries:list` POST included) and returns the final answer, whatever its status; `Err`
    /// describes a transport failure without its URL.
    pub async fn send<F>(&self, build: F) -> Result<Answer, String>
    where
        F: FnMut() -> reqwest::RequestBuilder,
    {
        let response = self
            .retry
            .send_idempotent(build)
            .await
            .map_err(|e| crate::http::error_kind(&e).to_string())?;
        let status = response.status();
        let headers = response.headers().clone();
        // One page is one document, bounded like a record: a hostile or broken server does
        // not decide how much memory a hunt takes.
        let body = crate::http::read_body(response, bounded::MAX_RECORD)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// An AWS SDK error in a line: the service's code and message, or the HTTP status, or — for a
/// request that never got an answer (no credentials, no network) — the innermost cause, since
/// the full chain repeats raw responses and runs to kilobytes.
pub(crate) fn aws_error<E>(e: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata as _;
    if let Some(code) = e.code() {
        return format!("{code}: {}", e.message().unwrap_or(""));
    }
    if let Some(raw) = e.raw_response() {
        return format!("HTTP {}", raw.status().as_u16());
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    let text: String = cause.to_string().chars().take(300).collect();
    let kind = match e {
        aws_sdk_s3::error::SdkError::TimeoutError(_) => "timed out",
        aws_sdk_s3::error::SdkError::DispatchFailure(_) => "not sent",
        _ => "failed",
    };
    format!("{kind}: {text}")
}

/// Fetches one remote's pages into `tx`.
async fn fetch(
    remote: &Remote,
    window: Window,
    ctx: &Context,
    scope: &super::athena::Scope,
    tx: &PageSender,
) -> Fetched {
    match remote {
        Remote::Athena(table) => super::athena::fetch(ctx, table, window, scope, tx).await,
        Remote::S3 { bucket, prefix } => s3::fetch(ctx, bucket, prefix, window, tx).await,
        Remote::LookupEvents { access_key_ids } => {
            lookup_events::fetch(ctx, access_key_ids, window, tx).await
        }
        Remote::GithubOrg { org, phrase } => {
            github::fetch(ctx, org, phrase.as_deref(), window, tx).await
        }
        Remote::GcpProject { project, principal } => {
            gcp::fetch(ctx, project, principal.as_deref(), window, tx).await
        }
        Remote::AzureSignins { app_id } => {
            azure::fetch_signins(ctx, app_id.as_deref(), window, tx).await
        }
        Remote::AzureActivity { subscription } => {
            azure::fetch_activity(ctx, subscription, window, tx).await
        }
    }
}

/// Runs a hunt over `opts.inputs` (files) and `remotes` (fetched concurrently while the
/// workers read). Fetch errors and retention limits become the report's problems and notes.
pub async fn hunt(
    rules: Arc<RuleSet>,
    opts: HuntOptions,
    remotes: Vec<Remote>,
    window: Window,
    ctx: Arc<Context>,
) -> HuntReport {
    if remotes.is_empty() {
        let run = tokio::task::spawn_blocking(move || engine::run(&rules, &opts)).await;
        return run.unwrap_or_else(|e| failed(format!("the hunt stopped: {e}")));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(LOOK_AHEAD);
    let scope = Arc::new(super::athena::Scope {
        rules: rules.clone(),
        credentials: opts.credentials.clone(),
        since: opts.since,
    });
    let fetchers: Vec<_> = remotes
        .into_iter()
        .map(|remote| {
            let tx = tx.clone();
            let ctx = ctx.clone();
            let scope = scope.clone();
            tokio::spawn(async move { fetch(&remote, window, &ctx, &scope, &tx).await })
        })
        .collect();
    // The workers see the end of the feed once every fetcher has dropped its sender.
    drop(tx);
    let feed: PageFeed = Mutex::new(rx);
    let workers =
        tokio::task::spawn_blocking(move || engine::run_with_pages(&rules, &opts, Some(&feed)));
    let mut fetched = Fetched::default();
    for f in fetchers {
        match f.await {
            Ok(x) => {
                fetched.notes.extend(x.notes);
                fetched.problems.extend(x.problems);
                fetched.bytes_scanned += x.bytes_scanned;
                fetched.partial_records |= x.partial_records;
            }
            Err(e) => fetched.failed("fetch", format!("a fetcher stopped: {e}")),
        }
    }
    let mut report = workers
        .await
        .unwrap_or_else(|e| failed(format!("the hunt stopped: {e}")));
    if fetched.partial_records {
        report
            .findings
            .retain(|f| !super::athena::BASELINE_RULES.contains(&&*f.rule_id));
        report.notes.retain(|n| !n.contains("no address baseline"));
    }
    report.notes.extend(fetched.notes);
    report.incomplete.extend(fetched.problems);
    report
}

fn failed(message: String) -> HuntReport {
    HuntReport {
        problems: vec![Problem {
            location: "hunt".into(),
            message,
        }],
        ..Default::default()
    }
}
