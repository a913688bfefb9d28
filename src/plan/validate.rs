//! Semantic validation of a parsed plan: what serde's types cannot say.
//!
//! Duplicate target ids, a CircleCI variable bound by two targets, provider-specific fields that
//! are missing or unknown, unknown hunts, malformed CIDRs, slugs and URLs, decisions still marked
//! `REVIEW-REQUIRED`, and groupings nobody confirmed (a warning). Every diagnostic points at the
//! line and column of the value it is about.

use super::located::{Located, Pos};
use super::model::*;
use crate::diagnostic::Diagnostic;
use std::collections::BTreeSet;

/// Keyed by the plan's ids, places and principals: std's SipHash was 6% of validating a
/// 190,000-target plan. foldhash is seeded per process, so a hostile plan cannot aim
/// collisions at it.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Collects every problem of `plan` (parsed from `text`, the content of `file`).
pub fn validate(file: &str, text: &str, plan: &Plan) -> Vec<Diagnostic> {
    let mut out = unquoted(file, plan);
    quote_lines(&mut out, text);
    out
}

/// Every problem of `plan`, located but without the lines they are on (see [`quote_lines`]):
/// the text need not be at hand while the plan is checked.
pub fn unquoted(file: &str, plan: &Plan) -> Vec<Diagnostic> {
    let mut v = Validator {
        file,
        out: Vec::new(),
    };
    v.header(plan);
    v.hunts(&plan.hunts, "hunts");
    v.cidrs(&plan.allow_cidrs);
    v.endpoints(&plan.endpoints);
    v.targets(plan);
    v.shared_principals(plan);
    v.out
}

/// Fills each located diagnostic's quoted line from `text`, in one pass over the text (a
/// search per diagnostic was quadratic for a plan with an error in each of 190,000 targets).
pub fn quote_lines(diagnostics: &mut [Diagnostic], text: &str) {
    let mut wanted: Vec<(u32, usize)> = diagnostics
        .iter()
        .enumerate()
        .filter(|(_, d)| d.line > 0 && d.source_line.is_empty())
        .map(|(i, d)| (d.line, i))
        .collect();
    if wanted.is_empty() {
        return;
    }
    wanted.sort_unstable();
    let mut next = wanted.iter().peekable();
    for (n, line) in text.lines().enumerate() {
        let n = n as u32 + 1;
        while let Some(&&(_, i)) = next.peek().filter(|(at, _)| *at == n) {
            diagnostics[i].source_line = line.to_string();
            next.next();
        }
        if next.peek().is_none() {
            break;
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    out: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn error(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.out.push(Diagnostic::error(
            self.file, "", pos.line, pos.column, message,
        ));
        let last = self.out.len() - 1;
        &mut self.out[last]
    }

    fn warning(&mut self, pos: Pos, message: impl Into<String>) -> &mut Diagnostic {
        self.out.push(Diagnostic::warning(
            self.file, "", pos.line, pos.column, message,
        ));
        let last = self.out.len() - 1;
        &mut self.out[last]
    }

    fn header(&mut self, plan: &Plan) {
        if plan.api_version.as_str() != API_VERSION {
            let msg = format!(
                "unsupported apiVersion `{}`: this rekey reads `{API_VERSION}`",
                *plan.api_version
            );
            self.error(plan.api_version.pos, msg);
        }
        if plan.kind.as_str() != KIND {
            let msg = format!("unexpected kind `{}`: a plan is `{KIND}`", *plan.kind);
            self.error(plan.kind.pos, msg);
        }
        if plan.metadata.name.trim().is_empty() {
            self.error(plan.metadata.name.pos, "metadata.name is empty");
        }
        if let Some(incident) = &plan.incident {
            if let Some(until) = &incident.until
                && until.value <= incident.since.value
            {
                let msg = format!(
                    "incident.until ({}) is not after incident.since ({})",
                    until.value.to_rfc3339(),
                    incident.since.value.to_rfc3339()
                );
                self.error(until.pos, msg);
            }
            if incident.since.value > chrono::Utc::now() {
                let msg = "incident.since is in the future: hunts would search an empty window";
                self.error(incident.since.pos, msg);
            }
        }
        if let Some(max_age) = &plan.defaults.max_age
            && plan.defaults.grace.value > max_age.value
        {
            let msg = format!(
                "defaults.grace ({}) is longer than defaults.max_age ({}): a credential would be due again before its predecessor is revoked",
                plan.defaults.grace.value, max_age.value
            );
            self.warning(plan.defaults.grace.pos, msg);
        }
    }

    fn hunts(&mut self, hunts: &HuntSelection, at: &str) {
        for (phase, names) in [("pre", &hunts.pre), ("post", &hunts.post)] {
            for name in names {
                if crate::hunt::find(name).is_none() {
                    let known: Vec<&str> = crate::hunt::CATALOGUE.iter().map(|h| h.name).collect();
                    let msg = format!("{at}.{phase}: unknown hunt `{}`", name.value);
                    let help = format!("known hunts: {}", known.join(", "));
                    self.error(name.pos, msg).help = Some(help);
                } else if let Some(h) = crate::hunt::find(name) {
                    let fits = match (phase, h.phase) {
                        (_, crate::hunt::Phase::Both) => true,
                        ("pre", p) => p == crate::hunt::Phase::Pre,
                        (_, p) => p == crate::hunt::Phase::Post,
                    };
                    if !fits {
                        self.warning(
                            name.pos,
                            format!(
                                "{at}.{phase}: hunt `{}` is meant for the {} phase; here it finds nothing",
                                name.value,
                                if phase == "pre" { "post" } else { "pre" }
                            ),
                        );
                    }
                }
            }
        }
        for (source, list) in hunts.sources.all() {
            for entry in list {
                let e = entry.value.as_str();
                let bad = if e.starts_with("s3://") {
                    match crate::hunt::remote::Remote::parse_s3(e) {
                        Some(Err(why)) => Some(why),
                        _ if source != "cloudtrail" => {
                            Some("S3 holds only CloudTrail log files".to_string())
                        }
                        _ => None,
                    }
                } else if let Some(t) = crate::hunt::athena::Table::parse(e) {
                    match t {
                        Err(why) => Some(why),
                        Ok(_) if source != "cloudtrail" => {
                            Some("Athena's CloudTrail table holds only CloudTrail".to_string())
                        }
                        Ok(_) => None,
                    }
                } else if let Some(org) = e.strip_prefix("org:") {
                    if source != "github_audit" {
                        Some("`org:` names a GitHub organization (github_audit only)".into())
                    } else if org.is_empty() {
                        Some("`org:` needs an organization name".into())
                    } else {
                        None
                    }
                } else if e.is_empty() {
                    Some("empty entry".into())
                } else {
                    None
                };
                if let Some(why) = bad {
                    self.error(entry.pos, format!("{at}.sources.{source}: `{e}`: {why}"));
                }
            }
        }
        for (key, value) in &hunts.delivery_delay {
            let known = crate::hunt::source::ALL_SOURCES
                .iter()
                .any(|s| s.name() == key || s.name().replace('-', "_") == *key);
            if !known {
                let names: Vec<String> = crate::hunt::source::ALL_SOURCES
                    .iter()
                    .map(|s| s.name().replace('-', "_"))
                    .collect();
                self.error(
                    value.pos,
                    format!("{at}.delivery_delay: unknown source `{key}`"),
                )
                .help = Some(format!("sources: {}", names.join(", ")));
            }
        }
    }

    fn cidrs(&mut self, cidrs: &[Located<String>]) {
        for cidr in cidrs {
            if let Err(why) = parse_cidr(cidr) {
                self.error(
                    cidr.pos,
                    format!("allow_cidrs: `{}` is not a CIDR block: {why}", cidr.value),
                );
            }
        }
    }

    fn endpoints(&mut self, endpoints: &Endpoints) {
        for (name, value) in endpoints.all() {
            let Some(value) = value else { continue };
            match url::Url::parse(value) {
                Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
                Ok(u) => {
                    let msg = format!(
                        "endpoints.{name}: scheme `{}` is not http or https",
                        u.scheme()
                    );
                    self.error(value.pos, msg);
                }
                Err(e) => {
                    self.error(
                        value.pos,
                        format!("endpoints.{name}: `{}` is not a URL: {e}", value.value),
                    );
                }
            }
        }
    }

    fn targets(&mut self, plan: &Plan) {
        let mut ids: HashMap<&str, Pos> = HashMap::default();
        // (place, variable) → (target id, where it was first bound)
        let mut bound: HashMap<(Place<'_>, &str), (&str, Pos)> = HashMap::default();
        for target in &plan.targets {
            let id = target.id.as_str();
            if let Some(first) = ids.get(id) {
                let msg = format!(
                    "duplicate target id `{id}` (first defined at line {})",
                    first.line
                );
                self.error(target.id.pos, msg);
            } else {
                ids.insert(id, target.id.pos);
            }
            if !is_kebab_id(id) {
                let msg = format!("target id `{id}` must be lower-case letters, digits and dashes");
                self.error(target.id.pos, msg);
            }
            self.principal(target);
            self.bindings(target, &mut bound);
            self.policy(target);
            self.exec(target);
            self.ssh_key(target);
            self.observed(target);
            self.legacy_keypair(target);
            if !target.confirmed {
                let msg = format!(
                    "target `{id}` groups places whose values could not be compared; check that they hold one credential, then set `confirmed: true` (apply skips unconfirmed targets)"
                );
                self.warning(target.id.pos, msg);
            }
        }
    }

    /// The legacy AWS key pair of project settings is not a variable: CircleCI's API v2 cannot
    /// write it, and writing the planner's pseudo-names would create unrelated variables.
    fn legacy_keypair(&mut self, target: &Target) {
        for binding in &target.bindings {
            for var in binding.vars.values() {
                if [
                    crate::classify::LEGACY_AWS_ACCESS_KEY_ID,
                    crate::classify::LEGACY_AWS_SECRET_ACCESS_KEY,
                ]
                .contains(&var.as_str())
                {
                    let msg = format!(
                        "target `{}`: {} names the legacy AWS key pair of project settings, which rekey cannot write",
                        *target.id, var.value
                    );
                    let help = "write the binding as `aws_keypair: true` with no vars (rekey writes the pair through the project settings), or move the key into environment variables";
                    self.error(var.pos, msg).help = Some(help.into());
                    return;
                }
            }
        }
    }

    /// Two targets on one principal whose credentials the owner lists together (an IAM user,
    /// a repository's deploy keys, a service account, an application…): each would see the
    /// other's new credential as unknown, and a sweep for orphans after an interrupted mint
    /// could take it for its own; AWS allows only two keys per user besides. Refused for every
    /// provider whose `inspect` lists the principal's credentials (not github-token: one token
    /// per target, none listed).
    fn shared_principals(&mut self, plan: &Plan) {
        let mut seen: HashMap<(ProviderKind, Vec<&str>), &str> = HashMap::default();
        for target in &plan.targets {
            let Some((fields, at)) = listed_principal(target) else {
                continue;
            };
            let provider = target.provider.value;
            let names: Vec<&str> = fields.iter().map(|(_, v)| *v).collect();
            match seen.get(&(provider, names.clone())) {
                Some(first) => {
                    let who = fields
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let msg = format!(
                        "targets `{first}` and `{}` both rotate {provider} credentials of {who}: each would take the other's new credential for an unknown one",
                        *target.id
                    );
                    let help = "if they hold the same credential, merge their bindings into one target; otherwise rotate them in separate plans, one after the other";
                    self.error(at, msg).help = Some(help.into());
                }
                None => {
                    seen.insert((provider, names), target.id.as_str());
                }
            }
        }
    }

    fn principal(&mut self, target: &Target) {
        let provider = target.provider.value;
        for required in provider.required_principal() {
            match target.principal.field(required) {
                None => {
                    let msg = format!(
                        "target `{}`: provider {provider} needs `principal.{required}`",
                        *target.id
                    );
                    self.error(target.provider.pos, msg);
                }
                Some(v) if v.trim().is_empty() => {
                    self.error(
                        v.pos,
                        format!("target `{}`: principal.{required} is empty", *target.id),
                    );
                }
                Some(_) => {}
            }
        }
        for (name, value) in target.principal.set_fields() {
            if value.as_str() == REVIEW_REQUIRED {
                let help = match (provider, name) {
                    (ProviderKind::AwsIam, "user") => {
                        "fill in the IAM user that owns the key, or run `rekey plan --discover aws`"
                    }
                    _ => "fill in the value, or remove the target and list the variable as ignored",
                };
                let msg = format!(
                    "target `{}`: principal.{name} needs a reviewer's decision",
                    *target.id
                );
                self.error(value.pos, msg).help = Some(help.into());
            }
        }
        match (provider, target.principal.repository()) {
            (ProviderKind::GithubDeployKey, Some(repo))
                if repo.as_str() != REVIEW_REQUIRED && !is_owner_repo(repo) =>
            {
                let msg = format!(
                    "target `{}`: repository `{}` is not `owner/repo`",
                    *target.id, repo.value
                );
                self.error(repo.pos, msg);
            }
            _ => {}
        }
        if let Some(project) = target.principal.project() {
            self.slug(
                project,
                &format!("target `{}`: principal.project", *target.id),
            );
        }
    }

    fn slug<S: AsRef<str> + std::fmt::Display>(&mut self, slug: &Located<S>, what: &str) {
        if !is_project_slug(slug.value.as_ref()) {
            let msg = format!(
                "{what}: `{}` is not a project slug like gh/org/repo",
                slug.value
            );
            self.error(slug.pos, msg);
        }
    }

    fn bindings<'p>(
        &mut self,
        target: &'p Target,
        bound: &mut HashMap<(Place<'p>, &'p str), (&'p str, Pos)>,
    ) {
        let id = target.id.as_str();
        let provider = target.provider.value;
        let fields = provider.binding_fields();
        if target.bindings.is_empty() && provider != ProviderKind::CircleciCheckoutKey {
            let msg = format!(
                "target `{id}` has no bindings: nothing in CircleCI would receive the new credential"
            );
            self.error(target.id.pos, msg);
        }
        let mut places = BTreeSet::new();
        for binding in &target.bindings {
            if !self.settings_binding(target, binding, bound) {
                continue;
            }
            let anchor = binding
                .project
                .as_ref()
                .or(binding.context.as_ref())
                .map(|l| l.pos)
                .or_else(|| binding.vars.keys().next().map(|k| k.pos))
                .unwrap_or(target.id.pos);
            let Some(place) = binding.place() else {
                let msg =
                    format!("target `{id}`: a binding names exactly one of `project` or `context`");
                self.error(anchor, msg);
                continue;
            };
            if let Some(project) = &binding.project {
                self.slug(project, &format!("target `{id}`: binding project"));
            }
            if !places.insert(place) {
                self.error(anchor, format!("target `{id}` binds {place} twice"));
            }
            if fields.is_none() && binding.vars.is_empty() {
                let msg = format!(
                    "target `{id}`: this binding maps no field of the credential: nothing would be written to {place}, and the old credential would still be revoked"
                );
                self.error(anchor, msg).help = Some(
                    "map the fields the exec mint answers with, e.g. `vars: {value: NPM_TOKEN}`"
                        .into(),
                );
            }
            if let Some((allowed, required)) = fields {
                if allowed.is_empty() && !binding.vars.is_empty() {
                    let msg = format!(
                        "target `{id}`: provider {provider} keeps its key inside CircleCI; it takes no variables"
                    );
                    self.error(anchor, msg);
                }
                for field in binding.vars.keys() {
                    if !allowed.is_empty() && !allowed.contains(&field.as_str()) {
                        let msg = format!(
                            "target `{id}`: provider {provider} has no field `{}` (fields: {})",
                            field.value,
                            allowed.join(", ")
                        );
                        self.error(field.pos, msg);
                    }
                }
                for req in required.iter() {
                    if !binding.vars.keys().any(|k| k.as_str() == *req) {
                        let msg = format!(
                            "target `{id}`: binding at {place} does not map required field `{req}`"
                        );
                        self.error(anchor, msg);
                    }
                }
            }
            for field in binding.encoding.keys() {
                if !binding.vars.contains_key(field) {
                    let msg = format!(
                        "target `{id}`: encoding for `{}`, which this binding does not map",
                        field.value
                    );
                    self.error(field.pos, msg);
                }
            }
            for var in binding.vars.values() {
                if !is_env_var_name(var) {
                    let msg = format!(
                        "target `{id}`: `{}` is not a valid environment variable name",
                        var.value
                    );
                    self.error(var.pos, msg);
                }
                match bound.get(&(place, var.as_str())) {
                    Some((other, first)) if *other != id => {
                        let msg = format!(
                            "{place} variable {} is bound by target `{other}` (line {}) and by target `{id}`: one variable holds one credential",
                            var.value, first.line
                        );
                        self.error(var.pos, msg);
                    }
                    Some((_, first)) => {
                        let msg = format!(
                            "target `{id}` writes {place} variable {} twice (also line {})",
                            var.value, first.line
                        );
                        self.error(var.pos, msg);
                    }
                    None => {
                        bound.insert((place, var.as_str()), (id, var.pos));
                    }
                }
            }
        }
    }

    /// A binding into project settings rather than variables: the legacy AWS key pair
    /// (`aws_keypair`) or an additional SSH key (`ssh_hostname`). Returns whether the binding
    /// is an ordinary one that the variable checks must look at.
    fn settings_binding<'p>(
        &mut self,
        target: &'p Target,
        binding: &'p Binding,
        bound: &mut HashMap<(Place<'p>, &'p str), (&'p str, Pos)>,
    ) -> bool {
        let id = target.id.as_str();
        let provider = target.provider.value;
        let anchor = binding
            .project
            .as_ref()
            .or(binding.context.as_ref())
            .map(|l| l.pos)
            .unwrap_or(target.id.pos);
        let needs_host = provider == ProviderKind::CircleciSshKey;
        if !binding.aws_keypair && binding.ssh_hostname.is_none() && !needs_host {
            return true;
        }
        let place = match binding.place() {
            Some(place @ Place::Project(slug)) => {
                if !is_project_slug(slug) {
                    let msg = format!(
                        "target `{id}`: binding project `{slug}` is not a project slug like gh/org/repo"
                    );
                    self.error(anchor, msg);
                }
                place
            }
            _ => {
                let msg = format!(
                    "target `{id}`: project settings (the legacy AWS key pair, SSH keys) exist only in a project: name `project`, not `context`"
                );
                self.error(anchor, msg);
                return false;
            }
        };
        if !binding.vars.is_empty() {
            let msg = format!("target `{id}`: a binding into project settings takes no vars");
            self.error(anchor, msg);
        }
        if binding.aws_keypair {
            if provider != ProviderKind::AwsIam {
                let msg = format!(
                    "target `{id}`: `aws_keypair` holds an AWS access key; provider {provider} cannot fill it"
                );
                self.error(anchor, msg);
            }
            const SLOT: &str = "the legacy AWS key pair";
            match bound.get(&(place, SLOT)) {
                Some((other, first)) => {
                    let msg = format!(
                        "{place}: {SLOT} is bound by target `{other}` (line {}) and by target `{id}`",
                        first.line
                    );
                    self.error(anchor, msg);
                }
                None => {
                    bound.insert((place, SLOT), (id, anchor));
                }
            }
        }
        match (&binding.ssh_hostname, needs_host) {
            (Some(host), false) => {
                let msg = format!(
                    "target `{id}`: `ssh_hostname` is for provider circleci-ssh-key, not {provider}"
                );
                self.error(host.pos, msg);
            }
            (None, true) => {
                let msg = format!(
                    "target `{id}`: a circleci-ssh-key binding names `ssh_hostname` (the host the key is for; empty for every host)"
                );
                self.error(anchor, msg);
            }
            (Some(host), true) if host.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                let msg = format!(
                    "target `{id}`: ssh_hostname `{}` is not a host name",
                    host.value
                );
                self.error(host.pos, msg);
            }
            _ => {}
        }
        false
    }

    /// circleci-ssh-key: the public half is installed by a command or by a person; never both,
    /// never neither.
    fn ssh_key(&mut self, target: &Target) {
        let id = target.id.as_str();
        match (target.provider.value, &target.ssh_key) {
            (ProviderKind::CircleciSshKey, None) => {
                let msg = format!(
                    "target `{id}`: provider circleci-ssh-key needs an `ssh_key` block: `install` (a command) or `manual: true`"
                );
                self.error(target.provider.pos, msg);
            }
            (ProviderKind::CircleciSshKey, Some(hooks)) => {
                for (name, command) in [("install", &hooks.install), ("remove", &hooks.remove)] {
                    if let Some(command) = command
                        && (command.is_empty() || command.iter().any(|a| a == REVIEW_REQUIRED))
                    {
                        let msg =
                            format!("target `{id}`: ssh_key.{name} needs a command (argv list)");
                        let help = "or remove it and set `manual: true`: a person installs the public key and confirms";
                        self.error(command.pos, msg).help = Some(help.into());
                    }
                }
                match (&hooks.install, hooks.manual) {
                    (Some(command), true) => {
                        let msg = format!(
                            "target `{id}`: ssh_key has both `install` and `manual: true`: choose one"
                        );
                        self.error(command.pos, msg);
                    }
                    (None, false) => {
                        let msg = format!(
                            "target `{id}`: ssh_key needs `install` (a command) or `manual: true`"
                        );
                        self.error(target.provider.pos, msg);
                    }
                    _ => {}
                }
            }
            (other, Some(_)) => {
                let msg = format!(
                    "target `{id}`: `ssh_key` applies to provider circleci-ssh-key, not {other}"
                );
                self.error(target.provider.pos, msg);
            }
            (_, None) => {}
        }
    }

    fn policy(&mut self, target: &Target) {
        let id = target.id.as_str();
        if let Some(hunts) = &target.policy.hunts {
            self.hunts(hunts, &format!("target `{id}`: policy.hunts"));
        }
        for key in &target.policy.removable_keys {
            if key.as_str() == REVIEW_REQUIRED || key.trim().is_empty() {
                self.error(
                    key.pos,
                    format!("target `{id}`: policy.removable_keys entry needs a key id"),
                );
            }
        }
        if let Some(canary) = &target.policy.canary {
            self.slug(
                &canary.project,
                &format!("target `{id}`: policy.canary.project"),
            );
            if canary.branch.trim().is_empty() {
                self.error(
                    canary.project.pos,
                    format!("target `{id}`: policy.canary.branch is empty"),
                );
            }
        }
        if let Some(verify) = &target.policy.verify {
            if verify.attempts == Some(0) {
                let pos = verify
                    .timeout
                    .as_ref()
                    .map(|t| t.pos)
                    .unwrap_or(target.id.pos);
                self.error(
                    pos,
                    format!("target `{id}`: policy.verify.attempts must be at least 1"),
                );
            }
            if let Some(timeout) = &verify.timeout {
                let max = crate::providers::budget::MAX_TIMEOUT;
                if timeout.value.seconds() == 0 || timeout.value > max {
                    self.error(
                        timeout.pos,
                        format!(
                            "target `{id}`: policy.verify.timeout must be between 1s and {max}, not {}",
                            timeout.value
                        ),
                    )
                    .help = Some(format!(
                        "the provider's default is {}",
                        crate::providers::budget::VerifyBudget::default_for(
                            target.provider.value
                        )
                        .describe()
                    ));
                }
            }
        }
        if let (Some(grace), Some(max_age)) = (&target.policy.grace, &target.policy.max_age)
            && grace.value > max_age.value
        {
            let msg = format!(
                "target `{id}`: grace ({}) is longer than max_age ({})",
                grace.value, max_age.value
            );
            self.warning(grace.pos, msg);
        }
    }

    fn exec(&mut self, target: &Target) {
        let id = target.id.as_str();
        match (target.provider.value, &target.exec) {
            (ProviderKind::Exec, None) => {
                let msg = format!(
                    "target `{id}`: provider exec needs an `exec` block with mint, verify and revoke commands"
                );
                self.error(target.provider.pos, msg);
            }
            (ProviderKind::Exec, Some(exec)) => {
                for (name, command) in exec.all() {
                    if command.is_empty() || command.iter().any(|a| a == REVIEW_REQUIRED) {
                        let msg = format!("target `{id}`: exec.{name} needs a command (argv list)");
                        let help =
                            "secret values reach the command as JSON on stdin, never in argv";
                        self.error(command.pos, msg).help = Some(help.into());
                    }
                }
            }
            (other, Some(_)) => {
                let msg = format!(
                    "target `{id}`: `exec` commands only apply to provider exec, not {other}"
                );
                self.error(target.provider.pos, msg);
            }
            (_, None) => {}
        }
    }

    fn observed(&mut self, target: &Target) {
        let id = target.id.as_str();
        let places: BTreeSet<Place<'_>> =
            target.bindings.iter().filter_map(Binding::place).collect();
        for obs in &target.observed {
            let anchor = obs
                .project
                .as_ref()
                .or(obs.context.as_ref())
                .map(|l| l.pos)
                .unwrap_or(target.id.pos);
            match obs.place() {
                None => {
                    self.error(anchor, format!("target `{id}`: an observed entry names exactly one of `project` or `context`"));
                }
                Some(place)
                    if target.provider.value != ProviderKind::CircleciCheckoutKey
                        && !places.contains(&place) =>
                {
                    let msg = format!(
                        "target `{id}`: observed state for {place}, which the target does not bind"
                    );
                    self.error(anchor, msg);
                }
                Some(_) => {}
            }
        }
    }
}

fn is_kebab_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
}

fn is_env_var_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn is_owner_repo(s: &str) -> bool {
    let mut parts = s.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(o), Some(r), None) if !o.is_empty() && !r.is_empty())
}

/// `gh/org/repo`, `bb/org/repo`, `github/…`, `bitbucket/…` or `circleci/<org-id>/<project-id>`.
pub fn is_project_slug(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 3
        && matches!(parts[0], "gh" | "bb" | "github" | "bitbucket" | "circleci")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
}

/// Checks `addr/len` with a prefix length that fits the address family.
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, len) = s.split_once('/').ok_or("missing /prefix-length")?;
    let addr: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("`{addr}` is not an IP address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("`{len}` is not a prefix length"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(format!("prefix length {len} is larger than {max}"));
    }
    Ok((addr, len))
}

/// The principal fields that name whose credentials a target's `inspect` lists, with where to
/// point a diagnostic; `None` when the provider lists nothing beyond the target's own
/// credential, or the principal is not decided yet.
fn listed_principal(target: &Target) -> Option<(Vec<(&'static str, &str)>, Pos)> {
    let names: &[&str] = match target.provider.value {
        ProviderKind::AwsIam => &["account_id", "user"],
        ProviderKind::GithubDeployKey => &["repository"],
        ProviderKind::CircleciCheckoutKey => &["project"],
        ProviderKind::GcpSaKey => &["service_account"],
        ProviderKind::AzureAppSecret => &["tenant_id", "app_id"],
        // The commands define the principal (every field but the credential's own title and
        // key); without `exec.inspect` nothing is listed.
        ProviderKind::Exec if target.exec.as_ref().is_some_and(|e| e.inspect.is_some()) => &[],
        // An SSH key's listing is its bindings' projects and hostnames, and CircleCI dates no
        // key, so the sweep can prove none was rekey's and removes nothing.
        ProviderKind::Exec | ProviderKind::GithubToken | ProviderKind::CircleciSshKey => {
            return None;
        }
    };
    let mut fields = Vec::new();
    let mut at = None;
    for (name, value) in target.principal.set_fields() {
        let names_owner = match target.provider.value {
            ProviderKind::Exec => !matches!(name, "title" | "key_id"),
            _ => names.contains(&name),
        };
        if !names_owner {
            continue;
        }
        if value.as_str() == REVIEW_REQUIRED {
            return None;
        }
        at.get_or_insert(value.pos);
        fields.push((name, value.as_str()));
    }
    Some((fields, at?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_quoted_afterwards_are_the_lines_quoted_at_once() {
        let text = "a: 1\r\nb: 2\n\nd: 4\ne: 5";
        let at = [(4, 1), (2, 3), (0, 0), (4, 2), (9, 1), (5, 2), (3, 1)];
        let mut late: Vec<Diagnostic> = at
            .iter()
            .map(|&(l, c)| Diagnostic::error("p.yaml", "", l, c, "x"))
            .collect();
        quote_lines(&mut late, text);
        let at_once: Vec<Diagnostic> = at
            .iter()
            .map(|&(l, c)| Diagnostic::error("p.yaml", text, l, c, "x"))
            .collect();
        assert_eq!(late, at_once);
        assert_eq!(late[0].source_line, "d: 4");
    }

    #[test]
    fn small_checks() {
        assert!(is_project_slug("gh/acme/api"));
        assert!(!is_project_slug("acme/api"));
        assert!(is_env_var_name("AWS_ACCESS_KEY_ID"));
        assert!(!is_env_var_name("9X"));
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("2001:db8::/32").is_ok());
        assert!(!is_kebab_id("Aws"));
    }
}
