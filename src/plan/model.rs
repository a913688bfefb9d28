//! The rotation plan's types: what a reviewer reads, commits, and `apply` executes.
//!
//! These types are the plan's single source of truth: the YAML loader deserializes them, the
//! planner builds them, and `plans/rekey-plan.schema.json` is generated from them. Every value
//! that validation may point at is a [`Located`] so errors can name line and column.

use super::compact::{Empty, FieldMap, Sparse, shrunk};
use super::duration::PlanDuration;
use super::located::Located;
use super::principal::Principal;
use crate::inventory::{InventoryError, InventorySource, Masked};
use chrono::{DateTime, TimeZone, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A short string of the plan: inline up to 23 bytes (a slug, a variable name, a mask), shared
/// when longer (a clone counts a reference). Most of a plan's strings are such, and allocated
/// one by one they were millions of chunks at 190,000 targets.
pub type Text = smol_str::SmolStr;

/// The only `apiVersion` this build reads and writes.
pub const API_VERSION: &str = "rekey/v1";
/// The only `kind` of document `rekey` reads as a plan.
pub const KIND: &str = "RotationPlan";
/// Written by the planner where a person must decide; `validate` rejects a plan that still has it.
pub const REVIEW_REQUIRED: &str = "REVIEW-REQUIRED";

/// Start of the CircleCI incident window (CircleCI's guidance: activity from 2022-12-21 on).
pub fn default_incident_start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2022, 12, 21, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// A declarative rotation plan (`apiVersion: rekey/v1`, `kind: RotationPlan`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "rekey rotation plan")]
pub struct Plan {
    /// Always `rekey/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: Located<String>,
    /// Always `RotationPlan`.
    pub kind: Located<String>,
    pub metadata: Metadata,
    /// Present in an incident: every credential created before `until` is due whatever its
    /// age. Absent in a scheduled plan, where only `max_age` makes a credential due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<Incident>,
    #[serde(default)]
    pub defaults: Defaults,
    /// Hunts run around every target (a target's policy may replace them).
    #[serde(default)]
    pub hunts: HuntSelection,
    /// Networks (CIDR) from which use of a credential is expected: CircleCI's ranges, your egress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_cidrs: Vec<Located<String>>,
    /// Endpoint overrides for providers without a standard environment variable.
    #[serde(default, skip_serializing_if = "Endpoints::is_empty")]
    pub endpoints: Endpoints,
    #[serde(default)]
    pub targets: Vec<Target>,
    /// Variables recognised as configuration, not secrets; listed so nothing is dropped silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<Finding>,
    /// Variables no rule recognised: a person decides what they are.
    #[serde(default)]
    pub unclassified: Vec<Finding>,
    /// Places the inventory could not read.
    #[serde(default)]
    pub errors: Vec<InventoryError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: Located<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The inventory the plan was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryRef>,
    /// Where `apply` keeps this plan's state (journal, stash, lock): a directory, or
    /// `s3://BUCKET/PREFIX` for CI runners. `--state` or `REKEY_STATE` override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InventoryRef {
    pub source: InventorySource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub taken_at: DateTime<Utc>,
}

/// The window in which exposed credentials may have been abused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Incident {
    /// Start of the window (RFC 3339); default 2022-12-21T00:00:00Z.
    #[serde(default = "located_incident_start")]
    pub since: Located<DateTime<Utc>>,
    /// End of the exposure: credentials created before it are due whatever their age. Absent
    /// while the incident is open (then: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Located<DateTime<Utc>>>,
}

fn located_incident_start() -> Located<DateTime<Utc>> {
    Located::new(default_incident_start())
}

impl Plan {
    /// Where hunts start looking: the incident's start, else CircleCI's (2022-12-21).
    pub fn incident_since(&self) -> DateTime<Utc> {
        self.incident
            .as_ref()
            .map(|i| i.since.value)
            .unwrap_or_else(default_incident_start)
    }
}

impl Default for Incident {
    fn default() -> Self {
        Incident {
            since: located_incident_start(),
            until: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// How long the old credential stays disabled (not deleted) after the switch.
    #[serde(default = "default_grace")]
    pub grace: Located<PlanDuration>,
    /// Scheduled runs skip credentials younger than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Located<PlanDuration>>,
    #[serde(default)]
    pub on_findings: OnFindings,
}

fn default_grace() -> Located<PlanDuration> {
    Located::new(PlanDuration::from_hours(24))
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults {
            grace: default_grace(),
            max_age: Some(Located::new(PlanDuration::from_days(90))),
            on_findings: OnFindings::default(),
        }
    }
}

impl Default for OnFindings {
    fn default() -> Self {
        OnFindings {
            pre: PreFindings::default(),
            post: PostFindings::default(),
            severity: default_finding_severity(),
        }
    }
}

/// What a rotation does when a hunt reports findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnFindings {
    #[serde(default)]
    pub pre: PreFindings,
    #[serde(default)]
    pub post: PostFindings,
    /// Findings below this severity are reported but decide nothing (default: medium).
    #[serde(default = "default_finding_severity")]
    pub severity: crate::hunt::Severity,
}

fn default_finding_severity() -> crate::hunt::Severity {
    crate::hunt::Severity::Medium
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PreFindings {
    /// Record the evidence and rotate anyway (rotation is the remedy).
    #[default]
    Continue,
    /// Wait for a person to confirm before rotating this target.
    Pause,
    /// Do not rotate this target.
    Abort,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PostFindings {
    /// Report and go on to revoke the old credential.
    Continue,
    /// Reactivate the old credential where the owner allows it, stop, and report.
    #[default]
    Reactivate,
    /// Stop before revoking and report; the old credential stays disabled.
    Abort,
}

/// Names of hunts (see `rekey hunt --list`) to run before and after a rotation, and where the
/// audit logs they read are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HuntSelection {
    #[serde(default)]
    pub pre: Vec<Located<String>>,
    #[serde(default)]
    pub post: Vec<Located<String>>,
    /// Where each source's records are. A hunt with no source for its target is skipped, and
    /// the journal and dry run say so.
    #[serde(default, skip_serializing_if = "HuntSources::is_empty")]
    pub sources: HuntSources,
    /// How late each source's records arrive, by source name (`cloudtrail: 15m`); the
    /// post-rotation hunt covers up to now minus this. Defaults: see `rekey hunt --list`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub delivery_delay: BTreeMap<String, Located<PlanDuration>>,
}

/// Where the audit logs of each source are: paths of exports (files or directory trees,
/// relative to the plan file's directory),
/// `s3://bucket/prefix` for CloudTrail log files, `athena:DATABASE.TABLE[?workgroup=WG&output=s3://…&region=R1,R2]`
/// for the CloudTrail table in Athena, or `api`: the source's own API, narrowed to
/// the target's credentials (CloudTrail LookupEvents by access key id; Cloud Logging of the
/// service account's project; Graph sign-ins of the app; the GitHub audit log of the
/// repository's organization, or `org:NAME`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HuntSources {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cloudtrail: Vec<Located<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub circleci_audit: Vec<Located<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub github_audit: Vec<Located<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gcp_logging: Vec<Located<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azure_signins: Vec<Located<String>>,
    /// Activity Log exports, or `subscription:ID` for the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub azure_activity: Vec<Located<String>>,
}

impl HuntSources {
    pub fn is_empty(&self) -> bool {
        self.all().all(|(_, v)| v.is_empty())
    }

    /// Every source's entries, with the source's name as the plan spells it.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &Vec<Located<String>>)> {
        [
            ("cloudtrail", &self.cloudtrail),
            ("circleci_audit", &self.circleci_audit),
            ("github_audit", &self.github_audit),
            ("gcp_logging", &self.gcp_logging),
            ("azure_signins", &self.azure_signins),
            ("azure_activity", &self.azure_activity),
        ]
        .into_iter()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    /// GCP IAM API base URL (default https://iam.googleapis.com).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_iam: Option<Located<String>>,
    /// GCP OAuth token URL (default https://oauth2.googleapis.com/token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_token: Option<Located<String>>,
    /// Azure authority host (default https://login.microsoftonline.com).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_authority: Option<Located<String>>,
    /// Microsoft Graph base URL (default https://graph.microsoft.com/v1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_graph: Option<Located<String>>,
    /// GCP Cloud Logging API base URL, for hunts (default https://logging.googleapis.com).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_logging: Option<Located<String>>,
    /// Azure Resource Manager base URL, for Activity Log hunts (default
    /// https://management.azure.com).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_management: Option<Located<String>>,
}

impl Endpoints {
    pub fn is_empty(&self) -> bool {
        self.all().all(|(_, v)| v.is_none())
    }

    /// Every endpoint with its field name, for validation.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &Option<Located<String>>)> {
        [
            ("gcp_iam", &self.gcp_iam),
            ("gcp_token", &self.gcp_token),
            ("azure_authority", &self.azure_authority),
            ("azure_graph", &self.azure_graph),
            ("gcp_logging", &self.gcp_logging),
            ("azure_management", &self.azure_management),
        ]
        .into_iter()
    }
}

/// One credential at its owner, and every CircleCI place that holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Unique within the plan; used in the journal, reports and `--target`.
    pub id: Located<String>,
    pub provider: Located<ProviderKind>,
    /// How sure the classifier was that these places hold this one credential.
    #[serde(default)]
    pub confidence: Confidence,
    /// `false` when the planner grouped places it could not compare (context variables carry no
    /// value): a reviewer checks the grouping and sets `true`. `apply` refuses unconfirmed targets.
    #[serde(default = "yes")]
    pub confirmed: bool,
    /// Who owns the credential at the provider (IAM user, service account, app, repository…).
    #[serde(default)]
    pub principal: Principal,
    /// Every CircleCI place that holds the credential, and the variable of each of its fields.
    #[serde(default, deserialize_with = "shrunk")]
    pub bindings: Vec<Binding>,
    /// What the plan was made from; `apply` refuses to run if live state no longer matches.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "shrunk"
    )]
    pub observed: Vec<Observed>,
    // Stored only when set: most targets keep the plan's defaults.
    #[serde(default, skip_serializing_if = "Sparse::is_empty")]
    #[schemars(with = "Policy")]
    pub policy: Sparse<Policy>,
    // Boxed, as `ssh_key`: a target without them stays small.
    /// Commands for the `exec` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ExecCommands>")]
    pub exec: Option<Box<ExecCommands>>,
    /// circleci-ssh-key: where the new public half is installed (a command, or a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<SshKeyHooks>")]
    pub ssh_key: Option<Box<SshKeyHooks>>,
}

fn yes() -> bool {
    true
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// IAM user access key (id + secret).
    AwsIam,
    /// GitHub repository deploy key (SSH).
    GithubDeployKey,
    /// CircleCI checkout key of a project.
    CircleciCheckoutKey,
    /// Additional SSH key of project settings (rekey generates the pair).
    CircleciSshKey,
    /// GitHub personal access token (minted by a person).
    GithubToken,
    /// GCP service-account key (JSON).
    GcpSaKey,
    /// Azure app registration client secret.
    AzureAppSecret,
    /// Anything else, through user commands.
    Exec,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 8] = [
        ProviderKind::AwsIam,
        ProviderKind::GithubDeployKey,
        ProviderKind::CircleciCheckoutKey,
        ProviderKind::CircleciSshKey,
        ProviderKind::GithubToken,
        ProviderKind::GcpSaKey,
        ProviderKind::AzureAppSecret,
        ProviderKind::Exec,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::AwsIam => "aws-iam",
            ProviderKind::GithubDeployKey => "github-deploy-key",
            ProviderKind::CircleciCheckoutKey => "circleci-checkout-key",
            ProviderKind::GithubToken => "github-token",
            ProviderKind::GcpSaKey => "gcp-sa-key",
            ProviderKind::AzureAppSecret => "azure-app-secret",
            ProviderKind::Exec => "exec",
            ProviderKind::CircleciSshKey => "circleci-ssh-key",
        }
    }

    /// The credential fields a binding may map to variables, and which of them it must map.
    /// `None` means any field name is allowed (exec: the commands define the fields).
    pub fn binding_fields(self) -> Option<(&'static [&'static str], &'static [&'static str])> {
        match self {
            ProviderKind::AwsIam => Some((
                &["access_key_id", "secret_access_key"],
                &["access_key_id", "secret_access_key"],
            )),
            ProviderKind::GithubDeployKey => Some((&["private_key"], &["private_key"])),
            ProviderKind::CircleciCheckoutKey => Some((&[], &[])),
            ProviderKind::GithubToken => Some((&["token"], &["token"])),
            ProviderKind::GcpSaKey => Some((&["key_json"], &["key_json"])),
            ProviderKind::AzureAppSecret => Some((
                &["client_secret", "client_id", "tenant_id"],
                &["client_secret"],
            )),
            ProviderKind::Exec => None,
            // The private key goes to the project settings (`ssh_hostname`), not a variable.
            ProviderKind::CircleciSshKey => Some((&[], &[])),
        }
    }

    /// The binding field whose value is the credential's public id (an AWS access key id), so
    /// a project variable's masked last four tells which credential is in use.
    pub fn id_field(self) -> Option<&'static str> {
        match self {
            ProviderKind::AwsIam => Some("access_key_id"),
            _ => None,
        }
    }

    /// Principal fields the provider needs to find the credential's owner.
    pub fn required_principal(self) -> &'static [&'static str] {
        match self {
            ProviderKind::AwsIam => &["user"],
            ProviderKind::GithubDeployKey => &["repository"],
            ProviderKind::CircleciCheckoutKey => &["project"],
            ProviderKind::GithubToken => &[],
            ProviderKind::GcpSaKey => &["service_account"],
            ProviderKind::AzureAppSecret => &["app_id", "tenant_id"],
            ProviderKind::Exec => &[],
            ProviderKind::CircleciSshKey => &[],
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Confidence {
    Low,
    Medium,
    #[default]
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// One CircleCI place (project or context) and the variable that holds each credential field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    /// Project slug; exactly one of `project` and `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Located<Text>>,
    /// Context name; exactly one of `project` and `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Located<Text>>,
    /// Context id (the API addresses contexts by id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<Text>,
    /// Credential field → variable name, e.g. `access_key_id: AWS_ACCESS_KEY_ID` (empty for
    /// bindings into project settings: `aws_keypair`, `ssh_hostname`).
    #[serde(default)]
    #[schemars(with = "BTreeMap<Located<String>, Located<String>>")]
    pub vars: FieldMap<Located<Text>, Located<Text>>,
    /// Credential field → how the value is written (default raw).
    #[serde(default, skip_serializing_if = "FieldMap::is_empty")]
    #[schemars(with = "BTreeMap<Located<String>, Located<Encoding>>")]
    pub encoding: FieldMap<Located<Text>, Located<Encoding>>,
    /// aws-iam: the project's legacy AWS key pair (Project Settings → AWS Permissions, written
    /// through API v1.1 settings) instead of variables; `vars` is then empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub aws_keypair: bool,
    /// circleci-ssh-key: the host the project's additional SSH key is for (empty: every host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_hostname: Option<Located<String>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    #[default]
    Raw,
    Base64,
}

/// A CircleCI place, borrowed from a binding, observation or finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place<'a> {
    Project(&'a str),
    Context(&'a str),
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Project(p) => write!(f, "project {p}"),
            Place::Context(c) => write!(f, "context {c}"),
        }
    }
}

fn place_of<'a>(
    project: &'a Option<Located<Text>>,
    context: &'a Option<Located<Text>>,
) -> Option<Place<'a>> {
    match (project, context) {
        (Some(p), None) => Some(Place::Project(p.as_str())),
        (None, Some(c)) => Some(Place::Context(c.as_str())),
        _ => None,
    }
}

impl Binding {
    /// The place, or `None` when both or neither of project/context are set (invalid).
    pub fn place(&self) -> Option<Place<'_>> {
        place_of(&self.project, &self.context)
    }
}

/// State seen when the plan was made, compared with live state by `apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Observed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Located<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Located<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub var: Option<Text>,
    /// Project variables: CircleCI's mask (`xxxx` + last four).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<Masked>,
    /// Context variables: when the value last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// Keys: fingerprint of the key in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

impl Observed {
    pub fn place(&self) -> Option<Place<'_>> {
        place_of(&self.project, &self.context)
    }
}

/// A variable the planner did not turn into a target, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Located<Text>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Located<Text>>,
    pub var: Text,
    pub reason: Text,
}

impl Finding {
    pub fn place(&self) -> Option<Place<'_>> {
        place_of(&self.project, &self.context)
    }
}

/// Per-target overrides of the plan's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Located<PlanDuration>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Located<PlanDuration>>,
    /// Replaces the plan's `hunts` for this target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hunts: Option<HuntSelection>,
    /// Extra credentials of the principal (key ids) that may be deleted to make room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removable_keys: Vec<Located<String>>,
    /// A pipeline that must succeed with the new credential before the old one is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyPolicy>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self == Self::empty()
    }
}

/// The policy of a target that sets none.
static NO_POLICY: Policy = Policy {
    grace: None,
    max_age: None,
    hunts: None,
    removable_keys: Vec::new(),
    canary: None,
    verify: None,
};

impl Empty for Policy {
    fn empty() -> &'static Self {
        &NO_POLICY
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub project: Located<String>,
    pub branch: String,
    /// How long to wait for the pipeline's workflows (default 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<PlanDuration>>,
}

/// How long a new credential gets to prove it works (owners replicate it at their own pace).
/// Unset fields take the provider's default: about a minute for AWS, GitHub and CircleCI, ten
/// minutes for GCP and Azure (see `rekey apply --dry-run`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyPolicy {
    /// At most this many attempts (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Give up after this long (at most 1h); then the new credential is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<PlanDuration>>,
}

/// How the public half of a new SSH key becomes trusted on its host: a command the plan names
/// (`install`, public key JSON on stdin, as exec commands get theirs), or a person (`manual`,
/// who installs it and confirms with `rekey confirm` before the old key is deleted).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeyHooks {
    /// Installs the new public key where it is trusted (e.g. `authorized_keys` through
    /// configuration management). stdin: `{"operation": "install", "target", "public_key",
    /// "fingerprint", "hostnames"}`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "shrunk"
    )]
    pub install: Option<Located<Vec<String>>>,
    /// Removes the old public key from the host after the old key left CircleCI. stdin:
    /// `{"operation": "remove", "target", "fingerprint", "hostnames"}`. Without it, the revoke
    /// step asks a person to remove it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "shrunk"
    )]
    pub remove: Option<Located<Vec<String>>>,
    /// A person installs the public key (shown with its fingerprint) and removes the old one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// Per command (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<PlanDuration>>,
}

/// Commands of an `exec` target: argv arrays; values travel as JSON on stdin/stdout only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecCommands {
    #[serde(deserialize_with = "shrunk")]
    pub mint: Located<Vec<String>>,
    #[serde(deserialize_with = "shrunk")]
    pub verify: Located<Vec<String>>,
    #[serde(deserialize_with = "shrunk")]
    pub revoke: Located<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "shrunk"
    )]
    pub inspect: Option<Located<Vec<String>>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "shrunk"
    )]
    pub deactivate: Option<Located<Vec<String>>>,
    /// Per command (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Located<PlanDuration>>,
}

impl ExecCommands {
    pub fn all(&self) -> impl Iterator<Item = (&'static str, &Located<Vec<String>>)> {
        [
            ("mint", Some(&self.mint)),
            ("verify", Some(&self.verify)),
            ("revoke", Some(&self.revoke)),
        ]
        .into_iter()
        .chain([
            ("inspect", self.inspect.as_ref()),
            ("deactivate", self.deactivate.as_ref()),
        ])
        .filter_map(|(n, c)| c.map(|c| (n, c)))
    }
}
