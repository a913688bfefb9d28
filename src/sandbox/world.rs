//! A simulated copy of the world a plan describes, for `rekey apply --rehearse` and
//! `rekey sandbox serve --from-plan`: every CircleCI project and context the plan binds, with
//! variables whose masks (project) and timestamps (context) are what the plan `observed`; every
//! principal at its owner's simulator (AWS IAM user and keys, GitHub repository deploy key and
//! token, GCP service account key, Azure app password, CircleCI checkout and SSH keys) holding
//! the credential in use and, where the plan says so (`removable_keys`), others; exec owners
//! played by a stand-in the operator names ([`StandIn`]), or rekey's own made-up token owner.
//!
//! Everything listens on 127.0.0.1; every credential is made up here. What cannot be copied
//! from a plan is a value: the world's old credentials are fresh, and where the plan observed a
//! mask their stored copy ends with it. What the world cannot hold (a second GCP project or
//! Azure tenant, an exec owner without a stand-in, SSH-key install hooks) makes its target
//! [`NotRehearsable`] with the reason, never silently dropped.

use super::aws::{Access, AwsCredentials, AwsSandbox, AwsState, KeySpec};
use super::azure::AzureSandbox;
use super::circleci::{CheckoutKeySpec, CircleCiState, ContextSpec, ProjectSpec, StoredVar};
use super::gcp::GcpSandbox;
use super::github::{GithubSandbox, GithubState};
use super::{Rng, Sandbox, fake};
use crate::circleci::CircleCiClient;
use crate::github::GithubClient;
use crate::plan::{Encoding, Endpoints, ExecCommands, Located, Place, Plan, ProviderKind, Target};
use crate::providers::Provider;
use crate::providers::aws::AwsIamProvider;
use crate::providers::azure::AzureAppSecretProvider;
use crate::providers::checkout_key::CheckoutKeyProvider;
use crate::providers::exec::ExecProvider;
use crate::providers::gcp::{GcpAuth, GcpSaKeyProvider, ServiceAccountKey};
use crate::providers::github::{
    GithubDeployKeyProvider, GithubTokenProvider, TokenInputs, ValueSource,
};
use crate::providers::registry::ProviderSet;
use crate::secret::Secret;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The account a plan's AWS principals live in when it names none.
pub const DEFAULT_ACCOUNT: &str = "123456789012";

/// Who plays an exec target's owner: `PROGRAM` is run as `PROGRAM OPERATION` (inspect, mint,
/// verify, deactivate, revoke) in place of each command the plan names, speaking the exec
/// protocol (JSON on stdin and stdout, src/providers/exec.rs); `builtin` is rekey's own
/// made-up token owner (the one `rekey demo` rotates), seeded with the old token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StandIn {
    Builtin,
    Program(PathBuf),
}

impl StandIn {
    /// `TARGET=PROGRAM` or `TARGET=builtin`, as `--stand-in` takes it.
    pub fn parse(text: &str) -> Result<(String, StandIn), String> {
        let (target, program) = text
            .split_once('=')
            .filter(|(t, p)| !t.is_empty() && !p.is_empty())
            .ok_or_else(|| "expected TARGET=PROGRAM (or TARGET=builtin)".to_string())?;
        let stand_in = match program {
            "builtin" => StandIn::Builtin,
            path => StandIn::Program(PathBuf::from(path)),
        };
        Ok((target.to_string(), stand_in))
    }
}

/// A target the world cannot hold, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NotRehearsable {
    pub target: String,
    pub reason: String,
}

/// The simulators, seeded from a plan.
pub struct PlanWorld {
    pub circleci: Sandbox,
    pub aws: Arc<AwsSandbox>,
    pub github: GithubSandbox,
    pub gcp: Option<GcpSandbox>,
    pub azure: Option<AzureSandbox>,
    /// Targets left out, with the reason.
    pub not_rehearsable: Vec<NotRehearsable>,
    /// What the world had to make up or simplify, one line each (for the report).
    pub notes: Vec<String>,
    /// The new values a person would supply for github-token targets, and the old ones.
    token_new: BTreeMap<String, Secret>,
    token_old: BTreeMap<String, Secret>,
    /// Exec targets' commands as the rehearsal runs them (stand-ins in place of the plan's).
    exec: BTreeMap<String, ExecCommands>,
    /// Where the builtin exec owners keep their credentials; removed on drop.
    /// Removed on drop.
    _scratch: tempdir::Scratch,
    /// The old values the world stored (to prove none leaks: [`PlanWorld::secrets`]).
    old_values: Vec<Secret>,
    /// The CircleCI variables that hold a secret (not an id): (project, context, variable).
    secret_vars: Vec<SecretVar>,
}

/// A CircleCI variable holding a secret: (project slug, context name, variable name).
type SecretVar = (Option<String>, Option<String>, String);

/// Bound fields that name a credential rather than hold it.
const ID_FIELDS: [&str; 3] = ["access_key_id", "client_id", "tenant_id"];

mod tempdir {
    /// A directory removed when dropped.
    pub struct Scratch(pub std::path::PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What one target contributes to CircleCI: a value per bound variable.
type Values = BTreeMap<String, String>;

/// Above this many service accounts, their made-up first keys share one key pair.
const MANY_ACCOUNTS: usize = 64;

/// Builds the CircleCI side and the owners' side at once, target by target.
struct Builder<'a> {
    plan: &'a Plan,
    /// Target by id (the first of that id, as a scan finds): found for every target, a scan
    /// of the plan made a world of 190,000 targets take hours.
    by_id: HashMap<&'a str, &'a Target>,
    rng: Rng,
    circleci: CircleCiState,
    aws: AwsState,
    github: GithubState,
    gcp_project: Option<String>,
    azure_tenant: Option<String>,
    /// GCP and Azure principals to create once their simulators run (they need the server's
    /// URL in key files): (target, account email) and (target, object id, title).
    gcp_accounts: Vec<(String, String)>,
    azure_apps: Vec<(String, String, Option<String>)>,
    world: Partial,
    stand_ins: &'a BTreeMap<String, StandIn>,
    scratch: PathBuf,
}

#[derive(Default)]
struct Partial {
    not_rehearsable: Vec<NotRehearsable>,
    notes: Vec<String>,
    token_new: BTreeMap<String, Secret>,
    token_old: BTreeMap<String, Secret>,
    exec: BTreeMap<String, ExecCommands>,
    old_values: Vec<Secret>,
    secret_vars: Vec<SecretVar>,
    /// (target, binding index) → values, written into CircleCI once every owner is seeded.
    values: Vec<(String, usize, Values)>,
}

/// Where throwaway directories go: memory (`/dev/shm`) where the system offers a writable
/// one, else the temp directory. The exec stand-ins' credentials and a rehearsal's state
/// then never reach a disk.
pub fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let probe = shm.join(format!(
        ".rekey-probe-{}-{}",
        std::process::id(),
        Rng::from_entropy().string(fake::HEX, 8)
    ));
    let writable = shm.is_dir() && std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    if writable {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// Long before any incident or max_age, so every old credential is due.
fn long_ago() -> DateTime<Utc> {
    Utc::now() - Duration::days(700)
}

/// `value` with its last four characters replaced by `last4` (where the plan observed a
/// mask the world's fresh value cannot end with).
fn ending_in(value: &str, last4: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let keep: String = chars[..chars.len().saturating_sub(4)].iter().collect();
    format!("{keep}{last4}")
}

impl PlanWorld {
    /// Starts every simulator on 127.0.0.1 and seeds it from `plan`. Must be called within a
    /// Tokio runtime. `stand_ins` names who plays each exec target's owner.
    pub async fn start(
        plan: &Plan,
        stand_ins: &BTreeMap<String, StandIn>,
    ) -> std::io::Result<PlanWorld> {
        Self::start_with(plan, stand_ins, |_, _, _| Ok(())).await
    }

    /// [`PlanWorld::start`], with `seed` adding to the CircleCI, AWS and GitHub states
    /// before the simulators start (a world file's contents: [`super::world_file`]).
    pub(super) async fn start_with(
        plan: &Plan,
        stand_ins: &BTreeMap<String, StandIn>,
        seed: impl FnOnce(&mut CircleCiState, &mut AwsState, &mut GithubState) -> Result<(), String>,
    ) -> std::io::Result<PlanWorld> {
        let scratch = scratch_base().join(format!(
            "rekey-world-{}-{}",
            std::process::id(),
            Rng::from_entropy().string(fake::HEX, 8)
        ));
        std::fs::create_dir_all(&scratch)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o700))?;
        }
        let scratch_guard = tempdir::Scratch(scratch.clone());
        let mut rng = Rng::from_entropy();
        let token = fake::circleci_token(&mut rng);
        let account = plan
            .targets
            .iter()
            .filter(|t| t.provider.value == ProviderKind::AwsIam)
            .find_map(|t| t.principal.account_id().map(|a| a.value.clone()))
            .unwrap_or_else(|| DEFAULT_ACCOUNT.to_string());
        let mut b = Builder {
            plan,
            by_id: plan
                .targets
                .iter()
                .rev()
                .map(|t| (t.id.as_str(), t))
                .collect(),
            rng,
            circleci: CircleCiState::new(token),
            aws: AwsState::new(account),
            github: GithubState::new(),
            gcp_project: None,
            azure_tenant: None,
            gcp_accounts: Vec::new(),
            azure_apps: Vec::new(),
            world: Partial::default(),
            stand_ins,
            scratch,
        };
        b.places();
        seed(&mut b.circleci, &mut b.aws, &mut b.github).map_err(std::io::Error::other)?;
        for target in &plan.targets {
            if let Err(reason) = b.target(target) {
                // Its variables still exist, holding made-up values, as in the real world.
                let fillers = b.same_everywhere_of(target.id.as_str(), "", "");
                b.push_values(target.id.as_str(), fillers);
                b.world.not_rehearsable.push(NotRehearsable {
                    target: target.id.value.clone(),
                    reason,
                });
            }
        }
        b.finish(scratch_guard).await
    }

    /// The plan's `endpoints:` for this world's GCP and Azure simulators.
    pub fn endpoints(&self) -> Endpoints {
        let mut e = Endpoints::default();
        if let Some(gcp) = &self.gcp {
            e.gcp_iam = Some(Located::new(gcp.iam_url()));
            e.gcp_token = Some(Located::new(gcp.token_url()));
            e.gcp_logging = Some(Located::new(gcp.logging_url()));
        }
        if let Some(azure) = &self.azure {
            e.azure_authority = Some(Located::new(azure.authority_url()));
            e.azure_graph = Some(Located::new(azure.graph_url()));
            e.azure_management = Some(Located::new(azure.management_url()));
        }
        e
    }

    /// The commands an exec target runs in this world (its stand-in's), if it has a stand-in.
    pub fn exec_commands(&self, target: &str) -> Option<&ExecCommands> {
        self.exec.get(target)
    }

    /// A CircleCI client with this world's token.
    pub fn circleci_client(&self) -> Result<CircleCiClient, String> {
        let token = Secret::new(self.circleci.state().token());
        CircleCiClient::new(&self.circleci.base_url(), token).map_err(|e| e.to_string())
    }

    /// Every provider, with rekey's "own" credentials at each simulator (the simulators'
    /// admin identities, made up here: a rehearsal never reads rekey's real credentials).
    pub fn providers(&self, circleci: &CircleCiClient) -> Result<ProviderSet, String> {
        let github = GithubClient::new(
            &self.github.base_url(),
            Some(Secret::new(self.github.admin_token())),
        )
        .map_err(|e| e.to_string())?;
        let anonymous =
            GithubClient::new(&self.github.base_url(), None).map_err(|e| e.to_string())?;
        let source = |m: &BTreeMap<String, Secret>| {
            m.iter()
                .map(|(t, v)| (t.clone(), ValueSource::Value(v.clone())))
                .collect()
        };
        let inputs = TokenInputs {
            new: source(&self.token_new),
            old: source(&self.token_old),
            prompt: false,
        };
        let endpoints = self.endpoints();
        let gcp_auth = match self.gcp.as_ref().and_then(|g| g.admin_key_json()) {
            Some(key) => GcpAuth::KeyFile(Box::new(
                ServiceAccountKey::parse(key.expose()).map_err(|e| e.to_string())?,
            )),
            None => GcpAuth::None,
        };
        let gcp = GcpSaKeyProvider::new(&endpoints, gcp_auth).map_err(|e| e.to_string())?;
        let azure = AzureAppSecretProvider::new(
            &endpoints,
            self.azure.as_ref().and_then(|a| a.admin_identity()),
        )
        .map_err(|e| e.to_string())?;
        let providers: Vec<Arc<dyn Provider>> = vec![
            Arc::new(AwsIamProvider::new(&self.aws.sdk_config())),
            Arc::new(GithubDeployKeyProvider::new(github)),
            Arc::new(GithubTokenProvider::new(anonymous, inputs)),
            Arc::new(CheckoutKeyProvider::new(circleci.clone())),
            Arc::new(crate::providers::ssh_key::SshKeyProvider::new(
                circleci.clone(),
            )),
            Arc::new(gcp),
            Arc::new(azure),
            Arc::new(ExecProvider::new()),
        ];
        Ok(providers
            .into_iter()
            .fold(ProviderSet::default(), |set, p| set.with(p)))
    }

    /// The environment a client needs to reach this world, as `NAME=value` pairs: endpoints
    /// and the simulators' made-up admin credentials (never a rotated credential's value).
    pub fn client_environment(&self) -> Vec<(String, String)> {
        let aws = self.aws.admin_credentials();
        let mut env = vec![
            ("CIRCLECI_HOST".to_string(), self.circleci.base_url()),
            (
                "CIRCLECI_TOKEN".to_string(),
                self.circleci.state().token().to_string(),
            ),
            ("GITHUB_API_URL".to_string(), self.github.base_url()),
            ("GITHUB_TOKEN".to_string(), self.github.admin_token()),
            ("AWS_ENDPOINT_URL".to_string(), self.aws.endpoint_url()),
            ("AWS_ACCESS_KEY_ID".to_string(), aws.access_key_id),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                aws.secret_access_key.expose().to_string(),
            ),
            ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ];
        if let Some(path) = self.gcp_key_file() {
            env.push((
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                path.display().to_string(),
            ));
        }
        if let Some(azure) = &self.azure
            && let Some(id) = azure.admin_identity()
        {
            env.push(("AZURE_TENANT_ID".into(), id.tenant_id.clone()));
            env.push(("AZURE_CLIENT_ID".into(), id.client_id.clone()));
            env.push((
                "AZURE_CLIENT_SECRET".into(),
                id.client_secret.expose().to_string(),
            ));
        }
        env
    }

    /// The GCP simulator's admin key file (made up at start), written owner-only into the
    /// world's scratch directory for clients that read `GOOGLE_APPLICATION_CREDENTIALS`.
    fn gcp_key_file(&self) -> Option<PathBuf> {
        let key = self.gcp.as_ref()?.admin_key_json()?;
        let path = self._scratch.0.join("gcp-admin-key.json");
        crate::fsio::write_atomically(&path, key.expose().as_bytes()).ok()?;
        Some(path)
    }

    /// Every secret value this world knows: the old values it stored, the new github tokens
    /// it hands out, what every secret-holding CircleCI variable holds now (new values
    /// included), SSH private keys, every AWS secret ever issued, every GitHub token. Ids
    /// (AWS key ids, Azure client and tenant ids) are not secrets and are left out. A
    /// rehearsal's outputs must contain none of them.
    pub fn secrets(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .old_values
            .iter()
            .map(|s| s.expose().to_string())
            .collect();
        out.extend(self.token_new.values().map(|s| s.expose().to_string()));
        let state = self.circleci.state();
        for (project, context, var) in &self.secret_vars {
            let stored = match (project, context) {
                (Some(slug), _) => state
                    .project_by_slug(slug)
                    .and_then(|p| p.env_vars.get(var)),
                (_, Some(name)) => state.context_by_name(name).and_then(|c| c.vars.get(var)),
                _ => None,
            };
            out.extend(stored.map(|v| v.value.clone()));
        }
        for p in state.projects() {
            out.extend(p.ssh_keys.iter().map(|k| k.private_key.clone()));
        }
        out.extend(
            self.aws
                .state()
                .issued_secrets()
                .iter()
                .map(|s| s.expose().to_string()),
        );
        out.extend(self.github.state().token_values());
        out.retain(|s| s.len() >= 8);
        out.sort();
        out.dedup();
        out
    }
}

impl Builder<'_> {
    /// Every project and context the plan names, so that a binding's place exists even when
    /// the target that binds it is not rehearsable.
    fn places(&mut self) {
        let org = self
            .plan
            .metadata
            .inventory
            .as_ref()
            .and_then(|i| i.org.clone())
            .unwrap_or_else(|| "gh/rehearsal".to_string());
        let mut projects = BTreeSet::new();
        let mut contexts: BTreeMap<String, Option<String>> = BTreeMap::new();
        for t in &self.plan.targets {
            let places = t
                .bindings
                .iter()
                .map(|b| (b.place(), b.context_id.clone()))
                .chain(t.observed.iter().map(|o| (o.place(), None)));
            for (place, id) in places {
                match place {
                    Some(Place::Project(slug)) => {
                        projects.insert(slug.to_string());
                    }
                    Some(Place::Context(name)) => {
                        let entry = contexts.entry(name.to_string()).or_default();
                        if entry.is_none() {
                            *entry = id.map(|id| id.to_string());
                        }
                    }
                    None => {}
                }
            }
            for slug in [
                t.principal.project(),
                t.policy.canary.as_ref().map(|c| &c.project),
            ]
            .into_iter()
            .flatten()
            {
                projects.insert(slug.value.clone());
            }
        }
        for slug in projects {
            self.circleci.add_project(ProjectSpec::new(slug));
        }
        for (name, id) in contexts {
            self.circleci
                .add_context(ContextSpec::new(org.clone(), name.clone()));
            if let (Some(id), Some(c)) = (id, self.circleci.context_by_name_mut(&name)) {
                c.id = id;
            }
        }
    }

    /// Seeds one target's owner and decides its values; `Err(reason)` when it is not
    /// rehearsable.
    fn target(&mut self, t: &Target) -> Result<(), String> {
        let id = t.id.value.clone();
        let values: Vec<Values> = match t.provider.value {
            ProviderKind::AwsIam => self.aws_iam(t)?,
            ProviderKind::GithubDeployKey => self.deploy_key(t)?,
            ProviderKind::GithubToken => self.github_token(t)?,
            ProviderKind::CircleciCheckoutKey => {
                self.checkout_key(t)?;
                Vec::new()
            }
            ProviderKind::CircleciSshKey => {
                self.ssh_key(t)?;
                Vec::new()
            }
            ProviderKind::GcpSaKey => {
                self.gcp(t)?;
                Vec::new()
            }
            ProviderKind::AzureAppSecret => {
                self.azure(t)?;
                Vec::new()
            }
            ProviderKind::Exec => self.exec(t)?,
        };
        for (i, v) in values.into_iter().enumerate() {
            self.world.values.push((id.clone(), i, v));
        }
        Ok(())
    }

    /// One value for every bound field, the same in every binding (one credential).
    fn same_everywhere(&self, t: &Target, fields: &BTreeMap<&str, String>) -> Vec<Values> {
        t.bindings
            .iter()
            .map(|b| {
                b.vars
                    .keys()
                    .filter_map(|f| {
                        fields
                            .get(f.as_str())
                            .map(|v| (f.value.to_string(), v.clone()))
                    })
                    .collect()
            })
            .collect()
    }

    /// The last four the plan observed for `field` of `t` in a project, if any.
    fn observed_last4(&self, t: &Target, field: &str) -> Option<String> {
        t.bindings.iter().find_map(|b| {
            let var = b.vars.iter().find(|(f, _)| f.as_str() == field)?.1;
            t.observed
                .iter()
                .filter(|o| o.var.as_deref() == Some(var.as_str()) && o.place() == b.place())
                .find_map(|o| o.masked.as_ref().map(|m| m.last_four().to_string()))
        })
    }

    fn aws_iam(&mut self, t: &Target) -> Result<Vec<Values>, String> {
        let user = required(t, "user")?;
        if t.bindings.iter().any(|b| b.aws_keypair) {
            return Err(
                "aws-iam: the world does not hold legacy project-settings key pairs".into(),
            );
        }
        if self.aws.user_info(&user).is_none() {
            self.aws
                .add_user(&user, Access::None)
                .map_err(|e| format!("aws-iam: {e}"))?;
        }
        let key_id = match (
            t.principal.key_id(),
            self.observed_last4(t, "access_key_id"),
        ) {
            (Some(k), _) => k.value.clone(),
            (None, Some(last4)) => ending_in(&fake::aws_access_key_id(&mut self.rng), &last4),
            (None, None) => fake::aws_access_key_id(&mut self.rng),
        };
        let secret = fake::aws_secret_access_key(&mut self.rng);
        let spec = KeySpec::active()
            .created_at(long_ago())
            .credentials(AwsCredentials {
                access_key_id: key_id.clone(),
                secret_access_key: Secret::new(secret.clone()),
            });
        self.aws
            .add_key(&user, spec)
            .map_err(|e| format!("aws-iam: user {user}: {e}"))?;
        for removable in &t.policy.removable_keys {
            let spec = KeySpec::inactive()
                .created_at(long_ago())
                .credentials(AwsCredentials {
                    access_key_id: removable.value.clone(),
                    secret_access_key: Secret::new(fake::aws_secret_access_key(&mut self.rng)),
                });
            if let Err(e) = self.aws.add_key(&user, spec) {
                self.world.notes.push(format!(
                    "{}: removable key {} not seeded ({e})",
                    t.id.value, removable.value
                ));
            }
        }
        self.world.old_values.push(Secret::new(secret.clone()));
        let fields = BTreeMap::from([("access_key_id", key_id), ("secret_access_key", secret)]);
        Ok(self.same_everywhere(t, &fields))
    }

    fn deploy_key(&mut self, t: &Target) -> Result<Vec<Values>, String> {
        let repo = required(t, "repository")?;
        let title = optional(t, "title").unwrap_or_else(|| "deploy key".into());
        self.github.add_foreign_key(&repo, &title);
        let private = fake::ssh_private_key(&mut self.rng);
        self.world.old_values.push(Secret::new(private.clone()));
        Ok(self.same_everywhere(t, &BTreeMap::from([("private_key", private)])))
    }

    fn github_token(&mut self, t: &Target) -> Result<Vec<Values>, String> {
        let login = optional(t, "user")
            .or_else(|| optional(t, "service"))
            .unwrap_or_else(|| "token-owner".into());
        let mut old = fake::github_token(&mut self.rng);
        if let Some(last4) = self.observed_last4(t, "token") {
            old = ending_in(&old, &last4);
        }
        self.github.register_token(&old, &login, "repo");
        let new = self.github.add_token(&login, "repo");
        let id = t.id.value.clone();
        self.world
            .token_old
            .insert(id.clone(), Secret::new(old.clone()));
        self.world.token_new.insert(id.clone(), Secret::new(new));
        self.world.old_values.push(Secret::new(old.clone()));
        self.world.notes.push(format!(
            "{id}: the new token a person would paste is supplied by the rehearsal"
        ));
        Ok(self.same_everywhere(t, &BTreeMap::from([("token", old)])))
    }

    fn checkout_key(&mut self, t: &Target) -> Result<(), String> {
        let slug = required(t, "project")?;
        let fingerprint = t.observed.iter().find_map(|o| o.fingerprint.clone());
        // A project spec adds generated keys; the observed fingerprint then replaces the
        // generated one, so that inspect finds the key the plan saw.
        let mut spec_state = CircleCiState::new("x");
        spec_state.add_project(
            ProjectSpec::new(slug.clone()).checkout_key(CheckoutKeySpec::deploy_key()),
        );
        let mut keys = spec_state
            .project_by_slug(&slug)
            .map(|p| p.checkout_keys.clone())
            .unwrap_or_default();
        for k in &mut keys {
            if let Some(f) = &fingerprint {
                k.fingerprint = f.clone();
            }
            k.created_at = long_ago();
        }
        if let Some(p) = self.circleci.project_by_slug_mut(&slug) {
            p.checkout_keys.extend(keys);
        }
        Ok(())
    }

    fn ssh_key(&mut self, t: &Target) -> Result<(), String> {
        if t.ssh_key.as_ref().is_some_and(|h| h.install.is_some()) {
            return Err(
                "circleci-ssh-key: its install hook runs a plan command against real hosts".into(),
            );
        }
        for b in &t.bindings {
            let Some(Place::Project(slug)) = b.place() else {
                continue;
            };
            let host = b
                .ssh_hostname
                .as_ref()
                .map(|h| h.value.clone())
                .unwrap_or_default();
            let mut spec_state = CircleCiState::new("x");
            spec_state.add_project(ProjectSpec::new(slug.to_string()).ssh_key(host));
            let keys = spec_state
                .project_by_slug(slug)
                .map(|p| p.ssh_keys.clone())
                .unwrap_or_default();
            for k in &keys {
                self.world
                    .old_values
                    .push(Secret::new(k.private_key.clone()));
            }
            if let Some(p) = self.circleci.project_by_slug_mut(slug) {
                p.ssh_keys.extend(keys);
            }
        }
        Ok(())
    }

    fn gcp(&mut self, t: &Target) -> Result<(), String> {
        let email = required(t, "service_account")?;
        let project = email
            .split_once('@')
            .and_then(|(_, d)| d.strip_suffix(".iam.gserviceaccount.com"))
            .ok_or_else(|| {
                format!("gcp-sa-key: {email} is not NAME@PROJECT.iam.gserviceaccount.com")
            })?
            .to_string();
        match &self.gcp_project {
            None => self.gcp_project = Some(project),
            Some(p) if *p == project => {}
            Some(p) => {
                return Err(format!(
                    "gcp-sa-key: the rehearsal's GCP simulator holds one project ({p}), not {project}"
                ));
            }
        }
        self.gcp_accounts.push((t.id.value.clone(), email));
        Ok(())
    }

    fn azure(&mut self, t: &Target) -> Result<(), String> {
        let object = required(t, "app_id")?;
        let tenant = optional(t, "tenant_id")
            .unwrap_or_else(|| "00000000-0000-4000-8000-000000000000".into());
        match &self.azure_tenant {
            None => self.azure_tenant = Some(tenant),
            Some(x) if *x == tenant => {}
            Some(x) => {
                return Err(format!(
                    "azure-app-secret: the rehearsal's Azure simulator holds one tenant ({x}), not {tenant}"
                ));
            }
        }
        let title = optional(t, "title");
        self.azure_apps.push((t.id.value.clone(), object, title));
        Ok(())
    }

    fn exec(&mut self, t: &Target) -> Result<Vec<Values>, String> {
        let id = t.id.value.clone();
        let Some(commands) = &t.exec else {
            return Err("exec: the target has no `exec:` commands".into());
        };
        let Some(stand_in) = self.stand_ins.get(&id) else {
            return Err(format!(
                "exec: its commands reach the real owner; name a stand-in with `--stand-in {id}=PROGRAM` (or `{id}=builtin`)"
            ));
        };
        let value = fake::npm_token(&mut self.rng);
        let program = match stand_in {
            StandIn::Program(p) => p.display().to_string(),
            StandIn::Builtin => {
                let safe: String = id
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                let dir = self.scratch.join("exec").join(safe);
                builtin_owner(&dir, &value).map_err(|e| format!("exec: stand-in: {e}"))?
            }
        };
        let cmd = |op: &str| Located::new(vec![program.clone(), op.to_string()]);
        self.world.exec.insert(
            id.clone(),
            ExecCommands {
                mint: cmd("mint"),
                verify: cmd("verify"),
                revoke: cmd("revoke"),
                inspect: commands.inspect.as_ref().map(|_| cmd("inspect")),
                deactivate: commands.deactivate.as_ref().map(|_| cmd("deactivate")),
                timeout: commands.timeout.clone(),
            },
        );
        self.world.old_values.push(Secret::new(value.clone()));
        let fields: BTreeMap<&str, String> = t
            .bindings
            .iter()
            .flat_map(|b| b.vars.keys())
            .map(|f| (f.as_str(), value.clone()))
            .collect();
        Ok(self.same_everywhere(t, &fields))
    }

    /// Starts the simulators, creates GCP and Azure principals, writes every value into
    /// CircleCI (encoded as the binding says, ending with the observed mask).
    async fn finish(mut self, scratch: tempdir::Scratch) -> std::io::Result<PlanWorld> {
        let gcp = match self.gcp_project.clone() {
            Some(project) => Some(GcpSandbox::start(&project).await?),
            None => None,
        };
        if let Some(gcp) = &gcp {
            // The made-up first keys of a large world (a plan of 10,000 projects has thousands
            // of service accounts) share one key pair: a pair each took most of a minute even
            // at 512 bits, and these only stand in CircleCI as the old values (each keeps its
            // own key id and file; a rotation mints its new keys, each its own pair).
            let shared = if self.gcp_accounts.len() > MANY_ACCOUNTS {
                let bits = gcp.with_state(|s| s.key_bits);
                Some(
                    rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                        .map_err(std::io::Error::other)?,
                )
            } else {
                None
            };
            for (target, email) in std::mem::take(&mut self.gcp_accounts) {
                let name = email.split('@').next().unwrap_or_default().to_string();
                let made = gcp.with_state(|s| {
                    let account = s.add_account(&name);
                    match &shared {
                        Some(pair) => s.create_key_from(&account, pair),
                        None => s.create_key(&account),
                    }
                });
                match made {
                    Ok((_, json)) => {
                        self.world.old_values.push(json.clone());
                        let v = self.same_everywhere_of(&target, "key_json", json.expose());
                        self.push_values(&target, v);
                    }
                    Err(e) => self.world.not_rehearsable.push(NotRehearsable {
                        target,
                        reason: format!("gcp-sa-key: {e}"),
                    }),
                }
            }
            gcp.with_state(|s| s.backdate(Duration::days(700)));
        }
        let azure = match self.azure_tenant.clone() {
            Some(tenant) => Some(AzureSandbox::start(&tenant).await?),
            None => None,
        };
        if let Some(azure) = &azure {
            let tenant = self.azure_tenant.clone().unwrap_or_default();
            for (target, object, title) in std::mem::take(&mut self.azure_apps) {
                let made = azure.with_state(|s| {
                    let app_id = s.add_app_with_object_id(&object, "rehearsal");
                    s.add_password(&object, title.as_deref(), None)
                        .map(|(_, secret)| (app_id, secret))
                });
                let Some((app_id, secret)) = made else {
                    continue;
                };
                self.world.old_values.push(secret.clone());
                let mut values = self.same_everywhere_of(&target, "client_secret", secret.expose());
                for v in &mut values {
                    v.entry("client_id".into())
                        .and_modify(|x| *x = app_id.clone());
                    v.entry("tenant_id".into())
                        .and_modify(|x| *x = tenant.clone());
                }
                self.push_values(&target, values);
            }
            azure.with_state(|s| s.backdate(Duration::days(700)));
        }
        self.write_values();
        let aws = Arc::new(AwsSandbox::start(self.aws).await?);
        self.circleci.pipeline_check = Some(super::demo::aws_pipeline_check(aws.clone()));
        let world = self.world;
        Ok(PlanWorld {
            circleci: Sandbox::start(self.circleci).await?,
            aws,
            github: GithubSandbox::start(self.github).await?,
            gcp,
            azure,
            not_rehearsable: world.not_rehearsable,
            notes: world.notes,
            token_new: world.token_new,
            token_old: world.token_old,
            exec: world.exec,
            _scratch: scratch,
            old_values: world.old_values,
            secret_vars: world.secret_vars,
        })
    }

    /// For a target known by id: `value` in `field` and a filler in every other bound field
    /// (every field when `field` is empty).
    fn same_everywhere_of(&mut self, target: &str, field: &str, value: &str) -> Vec<Values> {
        let Some(t) = self.by_id.get(target).copied() else {
            return Vec::new();
        };
        t.bindings
            .iter()
            .map(|b| {
                b.vars
                    .keys()
                    .map(|f| {
                        let v = if !field.is_empty() && f.as_str() == field {
                            value.to_string()
                        } else {
                            fake::password(&mut self.rng)
                        };
                        (f.value.to_string(), v)
                    })
                    .collect()
            })
            .collect()
    }

    fn push_values(&mut self, target: &str, values: Vec<Values>) {
        for (i, v) in values.into_iter().enumerate() {
            self.world.values.push((target.to_string(), i, v));
        }
    }

    /// Every decided value into its CircleCI place.
    fn write_values(&mut self) {
        let mut replaced = 0;
        for (target, i, values) in std::mem::take(&mut self.world.values) {
            let Some(t) = self.by_id.get(target.as_str()).copied() else {
                continue;
            };
            let Some(b) = t.bindings.get(i) else { continue };
            for (field, value) in values {
                let Some(var) = b
                    .vars
                    .iter()
                    .find(|(f, _)| f.as_str() == field)
                    .map(|(_, v)| v)
                else {
                    continue;
                };
                let encoded = match b
                    .encoding
                    .iter()
                    .find(|(f, _)| f.as_str() == field)
                    .map(|(_, e)| e.value)
                {
                    Some(Encoding::Base64) => {
                        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &value)
                    }
                    _ => value,
                };
                let observed = t
                    .observed
                    .iter()
                    .find(|o| o.var.as_deref() == Some(var.as_str()) && o.place() == b.place());
                // An id is the credential's identity, the same in every binding: where the
                // plan observed two different tails for it, the world holds the one
                // credential and the engine finds the plan stale, as a real run would.
                let secret = !ID_FIELDS.contains(&field.as_str());
                let stored = match observed.and_then(|o| o.masked.as_ref()) {
                    Some(m) if secret && !encoded.ends_with(m.last_four()) => {
                        replaced += 1;
                        ending_in(&encoded, m.last_four())
                    }
                    _ => encoded,
                };
                let updated_at = observed.and_then(|o| o.updated_at).unwrap_or_else(long_ago);
                let stored = StoredVar {
                    value: stored,
                    created_at: long_ago().min(updated_at),
                    updated_at,
                };
                if secret {
                    self.world
                        .old_values
                        .push(Secret::new(stored.value.clone()));
                    self.world.secret_vars.push((
                        b.project.as_ref().map(|p| p.value.to_string()),
                        b.context.as_ref().map(|c| c.value.to_string()),
                        var.value.to_string(),
                    ));
                }
                match b.place() {
                    Some(Place::Project(slug)) => {
                        if let Some(p) = self.circleci.project_by_slug_mut(slug) {
                            p.env_vars.insert(var.value.to_string(), stored);
                        }
                    }
                    Some(Place::Context(name)) => {
                        if let Some(c) = self.circleci.context_by_name_mut(name) {
                            c.vars.insert(var.value.to_string(), stored);
                        }
                    }
                    None => {}
                }
            }
        }
        if replaced > 0 {
            self.world.notes.push(format!(
                "{replaced} stored old value(s) end with the plan's observed mask instead of the owner's made-up value (a mask is all a plan knows of a value)"
            ));
        }
    }
}

/// A principal field the target needs, or why it is not rehearsable.
fn required(t: &Target, field: &str) -> Result<String, String> {
    optional(t, field).ok_or_else(|| format!("{}: principal.{field} is not set", t.provider.value))
}

fn optional(t: &Target, field: &str) -> Option<String> {
    t.principal.field(field).map(|v| v.value.clone())
}

/// Writes rekey's made-up token owner (the demo's) into `dir`, holding `value` as its one
/// credential; returns the program to run.
fn builtin_owner(dir: &Path, value: &str) -> std::io::Result<String> {
    std::fs::create_dir_all(dir.join("creds"))?;
    std::fs::create_dir_all(dir.join("inactive"))?;
    let script = dir.join("owner.sh");
    std::fs::write(&script, super::demo_cloud::OWNER_SCRIPT)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(dir.join("creds"), std::fs::Permissions::from_mode(0o700))?;
    }
    std::fs::write(dir.join("creds").join("tok-0ld"), value)?;
    Ok(script.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ending_in_keeps_the_length() {
        assert_eq!(ending_in("abcdefgh", "WXYZ"), "abcdWXYZ");
        assert_eq!(ending_in("ab", "WXYZ"), "WXYZ");
    }

    #[test]
    fn stand_ins_parse() {
        assert_eq!(
            StandIn::parse("npm=builtin"),
            Ok(("npm".into(), StandIn::Builtin))
        );
        assert_eq!(
            StandIn::parse("npm=./fake owner"),
            Ok(("npm".into(), StandIn::Program("./fake owner".into())))
        );
        assert!(StandIn::parse("npm").is_err());
        assert!(StandIn::parse("=x").is_err());
    }

    /// A world of many service accounts gives their made-up first keys one pair; each key
    /// still has its own id, and the key file in CircleCI names it.
    #[tokio::test]
    async fn many_service_accounts_share_one_made_up_pair_each_key_its_own_id() {
        let n = MANY_ACCOUNTS + 2;
        let mut text = String::from(
            "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: gcp}\ntargets:\n",
        );
        for i in 0..n {
            text.push_str(&format!(
                "  - id: gcp-{i}\n    provider: gcp-sa-key\n    confirmed: true\n    \
                 principal: {{service_account: ci-{i}@acme-prod.iam.gserviceaccount.com}}\n    \
                 bindings:\n    - project: gh/acme/svc-{i}\n      vars: {{key_json: GCP_KEY}}\n"
            ));
        }
        let plan = crate::plan::load::parse("gcp.yaml", &text).unwrap();
        let world = PlanWorld::start(&plan, &BTreeMap::new()).await.unwrap();
        assert!(
            world.not_rehearsable.is_empty(),
            "{:?}",
            world.not_rehearsable
        );
        let gcp = world.gcp.as_ref().unwrap();
        let mut ids = BTreeSet::new();
        let mut pems = BTreeSet::new();
        for i in 0..n {
            let email = format!("ci-{i}@acme-prod.iam.gserviceaccount.com");
            let keys = gcp.with_state(|s| s.keys_of(&email));
            assert_eq!(keys.len(), 1, "{email}");
            let stored = world
                .circleci
                .state()
                .project_by_slug(&format!("gh/acme/svc-{i}"))
                .and_then(|p| p.env_vars.get("GCP_KEY"))
                .map(|v| v.value.clone())
                .unwrap();
            let file: serde_json::Value = serde_json::from_str(&stored).unwrap();
            let id = file["private_key_id"].as_str().unwrap().to_string();
            assert!(keys[0].0.ends_with(&id), "{} names {id}", keys[0].0);
            ids.insert(id);
            pems.insert(file["private_key"].as_str().unwrap().to_string());
        }
        assert_eq!((ids.len(), pems.len()), (n, 1));
    }
}
