//! Hunting checks over audit logs. This module owns the catalogue of hunt names a plan may
//! reference (`hunts.pre`, `hunts.post`); the sources, the Sigma evaluation and the baselines
//! live beside it as they are built.

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

/// The hunt of that name, if rekey knows it.
pub fn find(name: &str) -> Option<&'static HuntInfo> {
    CATALOGUE.iter().find(|h| h.name == name)
}
