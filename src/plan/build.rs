//! From an inventory and its classification to a plan: metadata, defaults, the hunts that fit
//! the providers present, and every target, ignored variable, unclassified variable and
//! inventory error in a stable order.

use super::located::Located;
use super::model::*;
use crate::classify::Classification;
use crate::inventory::Inventory;
use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};

/// Choices the person running `rekey plan` can make on the command line.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub name: String,
    pub since: DateTime<Utc>,
    /// A scheduled plan: no `incident`, so only `max_age` makes a credential due.
    pub schedule: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            name: "circleci-incident".into(),
            since: default_incident_start(),
            schedule: false,
        }
    }
}

/// Per target id, the sentence that explains its classification (a plan comment). Hashed with
/// foldhash (seeded per process): SipHash over 190,000 ids was a twentieth of `rekey plan`.
pub type Notes = HashMap<String, String, foldhash::fast::RandomState>;

/// A plan before it is written: the plan and, per target id, why it was classified so.
#[derive(Debug, Clone)]
pub struct Draft {
    pub plan: Plan,
    pub notes: Notes,
}

pub fn build(
    inventory: &Inventory,
    classification: Classification,
    options: &BuildOptions,
) -> Draft {
    let mut notes =
        Notes::with_capacity_and_hasher(classification.targets.len(), Default::default());
    // Collected in place, in the candidates' memory: a second array of 190,000 targets at
    // once was a fifth of `rekey plan`'s peak.
    let targets: Vec<Target> = classification
        .targets
        .into_iter()
        .map(|candidate| {
            notes.insert(candidate.target.id.value.clone(), candidate.reason);
            candidate.target
        })
        .collect();
    let providers: BTreeSet<ProviderKind> = targets.iter().map(|t| t.provider.value).collect();
    let mut errors = inventory.errors.clone();
    errors.sort_by(|a, b| (a.scope as u8, &a.name).cmp(&(b.scope as u8, &b.name)));

    let plan = Plan {
        api_version: Located::new(API_VERSION.to_string()),
        kind: Located::new(KIND.to_string()),
        metadata: Metadata {
            name: Located::new(options.name.clone()),
            description: None,
            state: None,
            inventory: Some(InventoryRef {
                source: inventory.source,
                org: inventory.org.clone(),
                taken_at: inventory.taken_at,
            }),
        },
        incident: (!options.schedule).then(|| Incident {
            since: Located::new(options.since),
            until: None,
        }),
        defaults: Defaults::default(),
        hunts: default_hunts(&providers),
        allow_cidrs: Vec::new(),
        endpoints: Endpoints::default(),
        targets,
        ignored: classification.ignored,
        unclassified: classification.unclassified,
        errors,
    };
    Draft { plan, notes }
}

/// The CircleCI checks always; each provider's own checks when the plan rotates one of its
/// credentials; after rotation, whether the old credential is still in use.
fn default_hunts(providers: &BTreeSet<ProviderKind>) -> HuntSelection {
    let mut pre = vec!["circleci-persistence", "circleci-logins"];
    if providers.contains(&ProviderKind::AwsIam) {
        pre.extend(["aws-recon", "aws-denied", "aws-programmatic-agents"]);
    }
    if providers.contains(&ProviderKind::GithubDeployKey)
        || providers.contains(&ProviderKind::GithubToken)
    {
        pre.push("github-git-new-ip");
    }
    if providers.contains(&ProviderKind::GcpSaKey) {
        pre.extend(["gcp-errors", "gcp-key-created"]);
    }
    if providers.contains(&ProviderKind::AzureAppSecret) {
        pre.push("azure-signin-failures");
    }
    let post = vec!["old-credential-used", "new-credential-outside-allowlist"];
    let located = |names: Vec<&str>| {
        names
            .into_iter()
            .map(|n| Located::new(n.to_string()))
            .collect()
    };
    HuntSelection {
        pre: located(pre),
        post: located(post),
        ..Default::default()
    }
}
