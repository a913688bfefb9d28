//! Audit logs fetched from the platforms' APIs while the hunt runs: CloudTrail log files in S3
//! and LookupEvents, the GitHub organization audit log, GCP Cloud Logging, Microsoft Graph
//! sign-ins and the Azure Activity Log. Each fetcher turns responses into [`Page`]s — the
//! response body as the platform sent it, named by where it came from — and sends them down a
//! bounded channel to the hunt's workers, which read them exactly as they read the same records
//! saved to a file (`source::read_from`). So a hunt over an export and a hunt over the API find
//! the same things, and memory follows the channel's look-ahead, not the input.

use super::engine::{self, HuntOptions, PageFeed};
use super::findings::HuntReport;
use super::pack::RuleSet;
use super::source::{Problem, Source};
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
    pub body: Vec<u8>,
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
}

impl Remote {
    pub fn source(&self) -> Source {
        match self {
            Remote::S3 { .. } | Remote::LookupEvents { .. } => Source::Cloudtrail,
            Remote::GithubOrg { .. } => Source::GithubAudit,
            Remote::GcpProject { .. } => Source::GcpLogging,
            Remote::AzureSignins { .. } => Source::AzureSignins,
            Remote::AzureActivity { .. } => Source::AzureSignins,
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

/// What a fetcher has to say besides its pages: retention limits, pages it could not get.
#[derive(Debug, Default)]
pub struct Fetched {
    pub notes: Vec<String>,
    pub problems: Vec<Problem>,
}

/// Sends pages to the workers; `false` when they are gone (the hunt ended).
pub type PageSender = tokio::sync::mpsc::Sender<Page>;

/// Fetches one remote's pages into `tx`.
async fn fetch(remote: &Remote, window: Window, endpoints: &Endpoints, tx: &PageSender) -> Fetched {
    let _ = (window, endpoints, tx);
    Fetched {
        problems: vec![Problem {
            location: remote.to_string(),
            message: "fetching from this API is not built yet".into(),
        }],
        ..Default::default()
    }
}

/// Runs a hunt over `opts.inputs` (files) and `remotes` (fetched concurrently while the
/// workers read). Fetch errors and retention limits become the report's problems and notes.
pub async fn hunt(
    rules: Arc<RuleSet>,
    opts: HuntOptions,
    remotes: Vec<Remote>,
    window: Window,
    endpoints: Arc<Endpoints>,
) -> HuntReport {
    hunt_reporting_unread(rules, opts, remotes, window, endpoints)
        .await
        .0
}

/// As [`hunt`], and also names each remote that could not be read completely: a hunt that
/// missed part of a source must not look clean.
pub async fn hunt_reporting_unread(
    rules: Arc<RuleSet>,
    opts: HuntOptions,
    remotes: Vec<Remote>,
    window: Window,
    endpoints: Arc<Endpoints>,
) -> (HuntReport, Vec<String>) {
    if remotes.is_empty() {
        let run = tokio::task::spawn_blocking(move || engine::run(&rules, &opts)).await;
        return (
            run.unwrap_or_else(|e| failed(format!("the hunt stopped: {e}"))),
            Vec::new(),
        );
    }
    let (tx, rx) = tokio::sync::mpsc::channel(LOOK_AHEAD);
    let names: Vec<String> = remotes.iter().map(Remote::to_string).collect();
    let fetchers: Vec<_> = remotes
        .into_iter()
        .map(|remote| {
            let tx = tx.clone();
            let endpoints = endpoints.clone();
            tokio::spawn(async move { fetch(&remote, window, &endpoints, &tx).await })
        })
        .collect();
    // The workers see the end of the feed once every fetcher has dropped its sender.
    drop(tx);
    let feed: PageFeed = Mutex::new(rx);
    let workers =
        tokio::task::spawn_blocking(move || engine::run_with_pages(&rules, &opts, Some(&feed)));
    let mut fetched = Fetched::default();
    let mut unread = Vec::new();
    for (f, name) in fetchers.into_iter().zip(names) {
        match f.await {
            Ok(x) => {
                if !x.problems.is_empty() {
                    unread.push(name);
                }
                fetched.notes.extend(x.notes);
                fetched.problems.extend(x.problems);
            }
            Err(e) => {
                fetched.problems.push(Problem {
                    location: name.clone(),
                    message: format!("the fetcher stopped: {e}"),
                });
                unread.push(name);
            }
        }
    }
    let mut report = workers
        .await
        .unwrap_or_else(|e| failed(format!("the hunt stopped: {e}")));
    report.notes.extend(fetched.notes);
    report.problems.extend(fetched.problems);
    (report, unread)
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
