//! Hunting checks over audit logs. This module owns the catalogue of hunt names a plan may
//! reference (`hunts.pre`, `hunts.post`) and the severity scale; beside it:
//!
//! - [`bounded`]: what one input may cost (record size, decompressed size) and the readers that
//!   hold it to that,
//! - [`source`]: the audit-log sources and their streaming file readers (records with locations),
//! - [`fields`]: lazy extraction of only the fields rules reference,
//! - [`sigma`]: the Sigma evaluator and per-source field mapping,
//! - [`pack`]: the project's own rule pack (embedded) and loading of third-party rules,
//! - [`remote`]: pages fetched from the platforms' APIs (S3, LookupEvents, GitHub, GCP, Azure),
//! - [`athena`]: the rules compiled to SQL and run on Athena, the rows read as records,
//! - [`engine`]: a hunt run — parallel over files, attribution, baselines, allow-lists,
//! - [`severity`]: the action baseline per credential, and how it moves a finding's severity,
//! - [`findings`]: findings, grouping, and their table / JSON / Markdown / timeline renderings,
//! - [`timeline_svg`]: the timeline chart of the findings per credential, as SVG,
//! - [`phases`]: phase timestamps of a run on stderr (`REKEY_HUNT_PHASES=1`), for profiling.

pub mod athena;
pub mod bounded;
pub(crate) mod chunked;
pub mod engine;
pub mod fields;
pub mod findings;
pub mod pack;
pub mod phases;
pub mod remote;
pub mod severity;
pub mod sigma;
pub mod source;
pub mod timeline_svg;

/// How bad a finding is; Sigma's `level` scale.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn from_sigma(level: &str) -> Option<Severity> {
        Some(match level.to_ascii_lowercase().as_str() {
            "informational" | "info" => Severity::Informational,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Severity::from_sigma(s).ok_or_else(|| {
            format!("unknown severity `{s}` (informational, low, medium, high, critical)")
        })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hunt a plan can name, and what it looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HuntInfo {
    pub name: &'static str,
    /// Whether it makes sense before a rotation, after it, or both.
    pub phase: Phase,
    pub summary: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
    Both,
}

/// Every hunt rekey knows, in the order `rekey hunt --list` shows them.
pub const CATALOGUE: &[HuntInfo] = &[
    HuntInfo {
        name: "circleci-persistence",
        phase: Phase::Pre,
        summary: "CircleCI audit log: new SSH keys, API tokens, users, variable changes by unexpected actors",
    },
    HuntInfo {
        name: "circleci-logins",
        phase: Phase::Pre,
        summary: "CircleCI audit log: user.logged_in from addresses not seen before the incident",
    },
    HuntInfo {
        name: "aws-recon",
        phase: Phase::Both,
        summary: "CloudTrail: reconnaissance calls (GetCallerIdentity, ListBuckets, ListUsers, …) by the credential",
    },
    HuntInfo {
        name: "aws-denied",
        phase: Phase::Both,
        summary: "CloudTrail: access denials in all their spellings",
    },
    HuntInfo {
        name: "aws-programmatic-agents",
        phase: Phase::Both,
        summary: "CloudTrail: Boto3, curl, python-requests, TruffleHog user agents",
    },
    HuntInfo {
        name: "github-git-new-ip",
        phase: Phase::Both,
        summary: "GitHub audit log: git.clone/fetch/push from addresses outside the baseline",
    },
    HuntInfo {
        name: "gcp-errors",
        phase: Phase::Both,
        summary: "Cloud Logging: PERMISSION_DENIED and errors by the service-account key",
    },
    HuntInfo {
        name: "gcp-key-created",
        phase: Phase::Pre,
        summary: "Cloud Logging: service-account keys created by the exposed key",
    },
    HuntInfo {
        name: "azure-signin-failures",
        phase: Phase::Both,
        summary: "Entra ID: service-principal sign-in failures with the secret",
    },
    HuntInfo {
        name: "azure-activity-sensitive",
        phase: Phase::Both,
        summary: "Azure Activity Log: role assignments, storage key listing, VM run-command, denied operations by the caller",
    },
    HuntInfo {
        name: "aws-post-compromise",
        phase: Phase::Both,
        summary: "CloudTrail: persistence, defense evasion, credential access, discovery bursts, execution, exfiltration, impact, console sign-in without MFA",
    },
    HuntInfo {
        name: "gcp-post-compromise",
        phase: Phase::Both,
        summary: "Cloud Logging: asset and IAM reconnaissance, IAM bindings, sinks deleted, secrets accessed, instances created",
    },
    HuntInfo {
        name: "azure-post-compromise",
        phase: Phase::Both,
        summary: "Azure Activity Log: diagnostic settings deleted, Key Vault access, federated credentials",
    },
    HuntInfo {
        name: "github-post-compromise",
        phase: Phase::Both,
        summary: "GitHub audit log: deploy keys and tokens, visibility and branch protection, secrets and webhooks, mass clones",
    },
    HuntInfo {
        name: "new-source-address",
        phase: Phase::Both,
        summary: "Any source: an address, /24 or country first seen for the credential after the incident start",
    },
    HuntInfo {
        name: "old-credential-used",
        phase: Phase::Post,
        summary: "The old credential used successfully after deactivation, or attempts with it",
    },
    HuntInfo {
        name: "new-credential-outside-allowlist",
        phase: Phase::Post,
        summary: "The new credential used from outside allow_cidrs",
    },
];

/// The threads a `--threads` value means (workers, renderers): 0 is one per core.
pub fn threads_or_cores(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The hunt of that name, if rekey knows it.
pub fn find(name: &str) -> Option<&'static HuntInfo> {
    CATALOGUE.iter().find(|h| h.name == name)
}
