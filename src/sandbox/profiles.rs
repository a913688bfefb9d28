//! Fault profiles for a [`PlanWorld`]: what `--faults none|realistic|hostile` injects into the
//! simulators before a rehearsal (or `rekey sandbox serve`), and what the simulators saw
//! afterwards ([`FaultTally`]).
//!
//! - `realistic`: what each owner documents, with its delays compressed. CircleCI and GitHub
//!   answer bursts of writes with 429 and `Retry-After: 1`; AWS answers `Throttling`; a new
//!   AWS key authenticates only after IAM's eventual consistency (documented as seconds:
//!   0.5 s here), a GCP key after 1 s (documented: 60 s or more), an Azure secret after 2 s
//!   (documented: minutes of replication).
//! - `hostile`: every kind of call rekey makes to a simulator (listings, creations,
//!   verifications by AWS STS, disables, deletions, variable reads and writes) fails once per
//!   target with a 5xx (the first attempts of each kind, as many as there are targets of that
//!   owner), and one binding,
//!   drawn with the seed, refuses every write (403). The crash at a random step is the
//!   rehearsal's own ([`crate::engine::rehearsal`]): the simulators cannot crash rekey.

use super::world::PlanWorld;
use super::{Rng, aws::Propagation};
use crate::plan::{Place, Plan, ProviderKind};
use std::time::Duration;

/// How hard the simulators push back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultProfile {
    #[default]
    None,
    Realistic,
    Hostile,
}

impl std::str::FromStr for FaultProfile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(FaultProfile::None),
            "realistic" => Ok(FaultProfile::Realistic),
            "hostile" => Ok(FaultProfile::Hostile),
            _ => Err(format!(
                "unknown fault profile `{s}`: expected none, realistic or hostile"
            )),
        }
    }
}

impl std::fmt::Display for FaultProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultProfile::None => "none",
            FaultProfile::Realistic => "realistic",
            FaultProfile::Hostile => "hostile",
        })
    }
}

/// A binding that refuses every write (hostile), for the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RefusedBinding {
    pub target: String,
    pub place: String,
}

/// What was set up, one line per fault, and the refused binding if any.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Injection {
    pub faults: Vec<String>,
    pub refused: Option<RefusedBinding>,
}

/// What the simulators answered, counted from their request logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultTally {
    /// Requests throttled: 429 (CircleCI, GitHub), AWS `Throttling`.
    pub throttled: usize,
    /// Requests answered with a 5xx.
    pub server_errors: usize,
    /// CircleCI requests refused with 403 (the hostile profile's refusing binding).
    pub refused: usize,
    /// A new credential refused while it propagates (AWS `InvalidClientTokenId`, a GCP or
    /// Azure token request answered 400 or 401).
    pub not_yet_propagated: usize,
    /// Requests the simulators answered in all.
    pub requests: usize,
}

fn count(targets: usize) -> u32 {
    u32::try_from(targets).unwrap_or(u32::MAX)
}

impl PlanWorld {
    /// Injects `profile`'s faults for the (rehearsable) targets of `plan`; `seed` draws the
    /// hostile profile's refusing binding.
    pub fn inject(&self, profile: FaultProfile, plan: &Plan, seed: u64) -> Injection {
        let of = |kind: ProviderKind| {
            plan.targets
                .iter()
                .filter(|t| t.provider.value == kind)
                .count()
        };
        let targets = plan.targets.len();
        let mut out = Injection::default();
        let mut note = |ok: bool, what: String| {
            if ok {
                out.faults.push(what);
            }
        };
        match profile {
            FaultProfile::None => {}
            FaultProfile::Realistic => {
                let burst = count(targets / 10 + 1);
                note(
                    self.circleci
                        .throttle("^(POST|PUT|DELETE) /api/v2/", burst, Duration::from_secs(1))
                        .is_ok(),
                    format!("CircleCI: the first {burst} writes answer 429, Retry-After 1 s"),
                );
                note(
                    self.github
                        .fail_next("^(POST|DELETE) /repos/", burst, 429)
                        .is_ok(),
                    format!(
                        "GitHub: the first {burst} deploy-key writes answer 429, Retry-After 1 s"
                    ),
                );
                note(
                    self.aws
                        .throttle("^(CreateAccessKey|UpdateAccessKey|DeleteAccessKey)$", burst)
                        .is_ok(),
                    format!("AWS IAM: the first {burst} key writes answer Throttling"),
                );
                self.aws.with_state(|s| {
                    s.set_propagation(Propagation::Delay(Duration::from_millis(500)))
                });
                note(true, "AWS IAM: a new key authenticates 0.5 s after its creation (eventual consistency, compressed)".into());
                if let Some(gcp) = &self.gcp {
                    gcp.with_state(|s| s.propagation = Duration::from_secs(1));
                    note(true, "GCP: a new key is usable 1 s after its creation (documented: 60 s or more)".into());
                }
                if let Some(azure) = &self.azure {
                    azure.with_state(|s| s.propagation = Duration::from_secs(2));
                    note(true, "Azure: a new secret is accepted 2 s after it was added (documented: minutes)".into());
                }
            }
            FaultProfile::Hostile => {
                let ci = count(targets);
                for (pattern, what) in [
                    (
                        "^GET /api/v2/project/.*/envvar$",
                        "project variable listings",
                    ),
                    (
                        "^POST /api/v2/project/.*/envvar$",
                        "project variable writes",
                    ),
                    (
                        "^PUT /api/v2/context/.*/environment-variable/",
                        "context variable writes",
                    ),
                    (
                        "^POST /api/v2/project/.*/checkout-key$",
                        "checkout-key creations",
                    ),
                    (
                        "^DELETE /api/v2/project/.*/checkout-key/",
                        "checkout-key deletions",
                    ),
                ] {
                    note(
                        self.circleci.fail_next(pattern, ci, 500).is_ok(),
                        format!("CircleCI: the first {ci} {what} answer 500"),
                    );
                }
                let n = count(of(ProviderKind::AwsIam));
                for action in [
                    "GetCallerIdentity",
                    "ListAccessKeys",
                    "CreateAccessKey",
                    "UpdateAccessKey",
                    "DeleteAccessKey",
                ] {
                    note(
                        n > 0 && self.aws.fail_next(&format!("^{action}$"), n).is_ok(),
                        format!("AWS IAM: the first {n} {action} calls answer 500"),
                    );
                }
                let n = count(of(ProviderKind::GithubDeployKey));
                for (pattern, what) in [
                    ("^GET /repos/.*/keys$", "deploy-key listings"),
                    ("^POST /repos/.*/keys$", "deploy-key creations"),
                    ("^DELETE /repos/.*/keys/", "deploy-key deletions"),
                ] {
                    note(
                        n > 0 && self.github.fail_next(pattern, n, 502).is_ok(),
                        format!("GitHub: the first {n} {what} answer 502"),
                    );
                }
                let n = count(of(ProviderKind::GcpSaKey));
                if let Some(gcp) = self.gcp.as_ref().filter(|_| n > 0) {
                    for (pattern, what) in [
                        ("^GET .*/keys$", "key listings"),
                        ("^POST .*/keys$", "key creations"),
                        (":disable$", "key disables"),
                        ("^DELETE .*/keys/", "key deletions"),
                    ] {
                        note(
                            gcp.server().fail_next(pattern, n, 503, None).is_ok(),
                            format!("GCP: the first {n} {what} answer 503"),
                        );
                    }
                }
                let n = count(of(ProviderKind::AzureAppSecret));
                if let Some(azure) = self.azure.as_ref().filter(|_| n > 0) {
                    for (pattern, what) in [
                        ("^GET /v1.0/applications/", "application reads"),
                        ("/addPassword$", "addPassword calls"),
                        ("/removePassword$", "removePassword calls"),
                    ] {
                        note(
                            azure.server().fail_next(pattern, n, 503, None).is_ok(),
                            format!("Azure: the first {n} {what} answer 503"),
                        );
                    }
                }
                out.refused = self.refuse_one_binding(plan, seed);
                if let Some(r) = &out.refused {
                    out.faults.push(format!(
                        "CircleCI: the binding in {} of target {} refuses every write (403)",
                        r.place, r.target
                    ));
                }
            }
        }
        out
    }

    /// Hostile: one binding, drawn with `seed`, whose writes answer 403. A context binding
    /// when the plan has one (its variables' writes are refused one by one, so only that
    /// binding is hit); else a project, whose variable writes all share one path (every
    /// binding of that project is hit).
    fn refuse_one_binding(&self, plan: &Plan, seed: u64) -> Option<RefusedBinding> {
        let state = self.circleci.state();
        let mut contexts = Vec::new();
        let mut projects = Vec::new();
        for t in &plan.targets {
            for b in &t.bindings {
                match b.place() {
                    Some(Place::Context(name)) => {
                        let id = b
                            .context_id
                            .as_ref()
                            .map(|id| id.to_string())
                            .or_else(|| state.context_by_name(name).map(|c| c.id.clone()));
                        let vars: Vec<String> =
                            b.vars.values().map(|v| v.value.to_string()).collect();
                        if let Some(id) = id {
                            contexts.push((t.id.value.clone(), name.to_string(), id, vars));
                        }
                    }
                    Some(Place::Project(slug)) if !b.aws_keypair => {
                        projects.push((t.id.value.clone(), slug.to_string()));
                    }
                    _ => {}
                }
            }
        }
        let mut rng = Rng::seeded(seed);
        if !contexts.is_empty() {
            let pick = rng.below(contexts.len() as u64) as usize;
            let (target, name, id, vars) = contexts.get(pick)?.clone();
            let names: Vec<String> = vars.iter().map(|v| regex::escape(v)).collect();
            let pattern = format!(
                "^PUT /api/v2/context/{}/environment-variable/({})$",
                regex::escape(&id),
                names.join("|")
            );
            return self
                .circleci
                .fail_next(&pattern, u32::MAX, 403)
                .ok()
                .map(|_| RefusedBinding {
                    target,
                    place: format!("context {name}"),
                });
        }
        let pick = rng.below(projects.len() as u64) as usize;
        let (target, slug) = projects.get(pick)?.clone();
        let pattern = format!("^POST /api/v2/project/{}/envvar$", regex::escape(&slug));
        self.circleci
            .fail_next(&pattern, u32::MAX, 403)
            .ok()
            .map(|_| RefusedBinding {
                target,
                place: format!("project {slug} (every variable)"),
            })
    }

    /// What the simulators answered so far.
    pub fn tally(&self) -> FaultTally {
        let mut t = FaultTally::default();
        let mut add = |status: u16, refusal: bool, propagation: bool| {
            t.requests += 1;
            match status {
                429 => t.throttled += 1,
                500..=599 => t.server_errors += 1,
                403 if refusal => t.refused += 1,
                _ if propagation => t.not_yet_propagated += 1,
                _ => {}
            }
        };
        for r in self.circleci.requests() {
            add(r.status, true, false);
        }
        for r in self.github.requests() {
            add(r.status, false, false);
        }
        for r in self.aws.requests() {
            // AWS answers throttling as a 400 `Throttling` error.
            let status = match r.error_code.as_deref() {
                Some("Throttling") => 429,
                _ => r.status,
            };
            let propagating = r.error_code.as_deref() == Some("InvalidClientTokenId");
            add(status, false, propagating);
        }
        let token_refusal =
            |r: &super::RecordedRequest| matches!(r.status, 400 | 401) && r.path.contains("token");
        for r in self.gcp.iter().flat_map(|g| g.server().requests()) {
            add(r.status, false, token_refusal(&r));
        }
        for r in self.azure.iter().flat_map(|a| a.server().requests()) {
            add(r.status, false, token_refusal(&r));
        }
        t
    }
}
