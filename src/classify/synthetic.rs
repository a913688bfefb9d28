//! Synthetic inventories: test and benchmark data, never a real organization.
//!
//! [`synthetic_inventory`] builds, deterministically and in memory, an organization shaped like
//! a large real one: most projects hold an AWS key pair drawn from a small pool (so the same
//! credential sits in hundreds of projects), some hold prefixed pairs, third-party tokens,
//! configuration, half pairs, names no rule knows and names unique to the project; contexts hold
//! pairs and webhooks under the same names. Benchmarks (`benches/plan.rs`) and scale tests use it.
//!
//! [`realistic_inventory`] is the organization of issue 10 (sizes): most values differ per
//! project (each team its own keys and tokens, of many kinds), so 10,000 projects × 30 variables
//! and 500 contexts × 20 make about 190,000 targets rather than a few hundred.

use crate::inventory::{
    CheckoutKey, Context, ContextVar, Inventory, InventorySource, LegacyAwsKeys, Masked, Project,
    ProjectVar, SshKey,
};
use chrono::{DateTime, Duration, TimeZone, Utc};

/// A small deterministic generator (SplitMix64): the same sizes always give the same inventory.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Four characters standing for the last four of secret number `n` of family `family`.
fn tail(family: u64, n: u64) -> Masked {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut x = family
        .wrapping_mul(1_000_003)
        .wrapping_add(n)
        .wrapping_mul(0x2545_F491_4F6C_DD1D);
    let mut s = String::with_capacity(8);
    s.push_str("xxxx");
    for _ in 0..4 {
        s.push(ALPHABET[(x % ALPHABET.len() as u64) as usize] as char);
        x /= ALPHABET.len() as u64;
    }
    Masked::new(&s)
}

/// Names no rule knows, shared by many projects (realistic: the same app settings everywhere).
const COMMON_UNKNOWN: &[&str] = &[
    "FEATURE_FLAGS_JSON",
    "API_BASE_URL",
    "MYSTERY_CONFIG",
    "BUILD_MATRIX",
    "CACHE_SALT",
    "SERVICE_TOKEN",
    "DB_PASSWORD",
    "LEGACY_SETTINGS",
];

const CONFIG: &[&str] = &[
    "AWS_DEFAULT_REGION",
    "NODE_ENV",
    "DOCKER_USERNAME",
    "LOG_LEVEL",
    "GOOGLE_COMPUTE_ZONE",
    "APP_VERSION",
];

const HOSTS: &[&str] = &["deploy.example.com", "bastion.example.com", ""];

/// An inventory of `projects` projects with `vars` variables each and `contexts` contexts with
/// `ctx_vars` variables each. Deterministic; for tests and benchmarks only.
pub fn synthetic_inventory(
    projects: usize,
    vars: usize,
    contexts: usize,
    ctx_vars: usize,
) -> Inventory {
    let mut rng = Rng(0x5EED_2023);
    let taken_at: DateTime<Utc> = Utc
        .with_ymd_and_hms(2023, 1, 5, 9, 0, 0)
        .single()
        .unwrap_or_default();

    let mut out_projects = Vec::with_capacity(projects);
    for p in 0..projects {
        let mut env: Vec<ProjectVar> = Vec::with_capacity(vars);
        let push = |env: &mut Vec<ProjectVar>, name: String, masked: Masked| {
            if env.len() < vars {
                env.push(ProjectVar {
                    name: name.into(),
                    masked,
                    created_at: None,
                });
            }
        };
        // The shared deploy user: 40 keys across the whole organization.
        if rng.chance(90) {
            let k = rng.below(40);
            push(&mut env, "AWS_ACCESS_KEY_ID".into(), tail(1, k));
            push(&mut env, "AWS_SECRET_ACCESS_KEY".into(), tail(2, k));
        }
        if rng.chance(30) {
            let k = rng.below(20);
            push(&mut env, "PROD_AWS_ACCESS_KEY_ID".into(), tail(3, k));
            push(&mut env, "PROD_AWS_SECRET_ACCESS_KEY".into(), tail(4, k));
        }
        if rng.chance(10) {
            let k = rng.below(5000);
            push(&mut env, "AWS_ACCESS_KEY_ID_STAGING".into(), tail(5, k));
            push(&mut env, "AWS_SECRET_ACCESS_KEY_STAGING".into(), tail(6, k));
        }
        if rng.chance(2) {
            // Half a pair: must be reported, not dropped.
            push(&mut env, "AWS_ACCESS_KEY_ID_OLD".into(), tail(7, p as u64));
        }
        if rng.chance(40) {
            push(&mut env, "NPM_TOKEN".into(), tail(8, rng.below(10)));
        }
        if rng.chance(50) {
            // Mostly a few shared bot tokens, sometimes a personal one.
            let k = if rng.chance(80) {
                rng.below(30)
            } else {
                1000 + p as u64
            };
            push(&mut env, "GITHUB_TOKEN".into(), tail(9, k));
        }
        if rng.chance(30) {
            push(&mut env, "SLACK_WEBHOOK_URL".into(), tail(10, rng.below(5)));
        }
        if rng.chance(30) {
            push(
                &mut env,
                "DOCKERHUB_PASSWORD".into(),
                tail(11, rng.below(3)),
            );
        }
        if rng.chance(20) {
            push(
                &mut env,
                "GCLOUD_SERVICE_KEY".into(),
                tail(12, rng.below(5)),
            );
        }
        if rng.chance(5) {
            let k = rng.below(4);
            push(&mut env, "ARM_CLIENT_ID".into(), tail(13, k));
            push(&mut env, "ARM_CLIENT_SECRET".into(), tail(14, k));
            push(&mut env, "ARM_TENANT_ID".into(), tail(15, 0));
        }
        if rng.chance(10) {
            push(&mut env, "DEPLOY_KEY".into(), tail(16, p as u64));
        }
        if rng.chance(15) {
            push(&mut env, "SENTRY_AUTH_TOKEN".into(), tail(17, rng.below(3)));
        }
        for name in CONFIG {
            if rng.chance(50) {
                push(&mut env, (*name).into(), tail(18, rng.below(8)));
            }
        }
        for name in COMMON_UNKNOWN {
            if rng.chance(25) {
                push(&mut env, (*name).into(), tail(19, rng.below(50)));
            }
        }
        // Names that exist in this project only.
        push(&mut env, format!("SERVICE_{p}_TOKEN"), tail(20, p as u64));
        push(&mut env, format!("APP_{p}_SETTING"), tail(21, p as u64));
        // The rest: settings shared by many projects, under a few hundred distinct names, in
        // three families: configuration by suffix (ignored), unknown, secret-looking (unclassified).
        let mut k = rng.below(300);
        while env.len() < vars {
            let name = match k % 3 {
                0 => format!("SVC{k}_HOST"),
                1 => format!("CONFIG_{k}"),
                _ => format!("SVC{k}_API_KEY"),
            };
            push(&mut env, name, tail(22, k));
            k += 1;
        }

        let slug = format!("gh/acme/service-{p:05}");
        let checkout_keys = vec![CheckoutKey {
            key_type: "deploy-key".into(),
            fingerprint: format!("SHA256:checkout{p:05}"),
            preferred: true,
            created_at: None,
        }];
        let ssh_keys = if rng.chance(5) {
            let h = rng.below(HOSTS.len() as u64) as usize;
            vec![SshKey {
                fingerprint: format!("SHA256:ssh{}", rng.below(20)),
                hostname: HOSTS[h].to_string(),
            }]
        } else {
            Vec::new()
        };
        let legacy_aws_keys = rng.chance(2).then(|| {
            let k = rng.below(10);
            LegacyAwsKeys {
                access_key_id: tail(23, k),
                secret_access_key: tail(24, k),
            }
        });
        out_projects.push(Project {
            slug,
            env_vars: env,
            checkout_keys,
            ssh_keys,
            legacy_aws_keys,
        });
    }

    let mut out_contexts = Vec::with_capacity(contexts);
    for c in 0..contexts {
        let mut variables: Vec<ContextVar> = Vec::with_capacity(ctx_vars);
        let updated = taken_at - Duration::days(rng.below(700) as i64);
        let push = |variables: &mut Vec<ContextVar>, name: String| {
            if variables.len() < ctx_vars {
                variables.push(ContextVar {
                    name: name.into(),
                    created_at: None,
                    updated_at: Some(updated),
                });
            }
        };
        if rng.chance(60) {
            push(&mut variables, "AWS_ACCESS_KEY_ID".into());
            push(&mut variables, "AWS_SECRET_ACCESS_KEY".into());
        }
        if rng.chance(20) {
            push(&mut variables, "SLACK_WEBHOOK".into());
        }
        if rng.chance(20) {
            push(&mut variables, "NPM_TOKEN".into());
        }
        if rng.chance(10) {
            push(&mut variables, "GCP_SA_KEY".into());
        }
        push(&mut variables, "AWS_REGION".into());
        push(&mut variables, format!("CONTEXT_{c}_SECRET"));
        let mut k = rng.below(100);
        while variables.len() < ctx_vars {
            push(&mut variables, format!("SHARED_SETTING_{k}"));
            k += 1;
        }
        out_contexts.push(Context {
            id: format!("ctx-{c:04}"),
            name: format!("context-{c:04}"),
            created_at: None,
            variables,
        });
    }

    Inventory {
        source: InventorySource::CircleciApi,
        org: Some("gh/acme".into()),
        taken_at,
        projects: out_projects,
        contexts: out_contexts,
        errors: Vec::new(),
    }
}

/// Single-variable tokens of many kinds (each a rule of the built-in set), most projects
/// holding their own value.
const TOKENS: &[&str] = &[
    "NPM_TOKEN",
    "GITHUB_TOKEN",
    "SLACK_WEBHOOK_URL",
    "DOCKERHUB_PASSWORD",
    "SENTRY_AUTH_TOKEN",
    "DATADOG_API_KEY",
    "CODECOV_TOKEN",
    "HEROKU_API_KEY",
    "STRIPE_SECRET_KEY",
    "SENDGRID_API_KEY",
    "SNYK_TOKEN",
    "CLOUDFLARE_API_TOKEN",
    "SONAR_TOKEN",
    "NETLIFY_AUTH_TOKEN",
    "VERCEL_TOKEN",
    "PYPI_API_TOKEN",
    "CIRCLECI_API_TOKEN",
    "GCLOUD_SERVICE_KEY",
    "DEPLOY_KEY",
    "SLACK_BOT_TOKEN",
    "COVERALLS_REPO_TOKEN",
    "NUGET_API_KEY",
    "MAILGUN_API_KEY",
    "TFC_TOKEN",
];

/// An organization whose projects mostly hold their own credentials: an AWS key pair each
/// (a few shared deploy keys too), 15–20 tokens of many kinds with per-project values (one in
/// ten shared by a team), configuration, and names no rule knows. Contexts hold the same kinds.
/// Deterministic; for tests and benchmarks only.
pub fn realistic_inventory(
    projects: usize,
    vars: usize,
    contexts: usize,
    ctx_vars: usize,
) -> Inventory {
    let mut rng = Rng(0x0BAD_5EED);
    let taken_at: DateTime<Utc> = Utc
        .with_ymd_and_hms(2023, 1, 5, 9, 0, 0)
        .single()
        .unwrap_or_default();
    // A value number unique to (project, slot), or one of a team's shared values.
    let value = |rng: &mut Rng, p: usize, slot: u64| -> u64 {
        if rng.chance(10) {
            1_000_000 + (p as u64 / 20) * 64 + slot
        } else {
            p as u64 * 64 + slot
        }
    };
    let mut out_projects = Vec::with_capacity(projects);
    for p in 0..projects {
        let mut env: Vec<ProjectVar> = Vec::with_capacity(vars);
        let push = |env: &mut Vec<ProjectVar>, name: String, masked: Masked| {
            if env.len() < vars {
                env.push(ProjectVar {
                    name: name.into(),
                    masked,
                    created_at: None,
                });
            }
        };
        let k = if rng.chance(5) {
            rng.below(40)
        } else {
            1000 + p as u64
        };
        push(&mut env, "AWS_ACCESS_KEY_ID".into(), tail(1, k));
        push(&mut env, "AWS_SECRET_ACCESS_KEY".into(), tail(2, k));
        if rng.chance(40) {
            let k = value(&mut rng, p, 0);
            push(&mut env, "PROD_AWS_ACCESS_KEY_ID".into(), tail(3, k));
            push(&mut env, "PROD_AWS_SECRET_ACCESS_KEY".into(), tail(4, k));
        }
        // 15 to 20 tokens, starting anywhere in the list so every kind is common.
        let count = 15 + rng.below(6) as usize;
        let first = rng.below(TOKENS.len() as u64) as usize;
        for i in 0..count {
            let t = (first + i) % TOKENS.len();
            let v = value(&mut rng, p, 1 + t as u64);
            push(&mut env, TOKENS[t].to_string(), tail(100 + t as u64, v));
        }
        for name in CONFIG {
            if rng.chance(50) {
                push(&mut env, (*name).into(), tail(18, rng.below(8)));
            }
        }
        push(&mut env, format!("SERVICE_{p}_SETTING"), tail(21, p as u64));
        let mut u = rng.below(300);
        while env.len() < vars {
            let name = if u.is_multiple_of(2) {
                format!("CONFIG_{u}")
            } else {
                format!("SVC{u}_API_KEY")
            };
            push(&mut env, name, tail(22, p as u64 * 300 + u));
            u += 1;
        }
        out_projects.push(Project {
            slug: format!("gh/acme/service-{p:05}"),
            env_vars: env,
            checkout_keys: vec![CheckoutKey {
                key_type: "deploy-key".into(),
                fingerprint: format!("SHA256:checkout{p:05}"),
                preferred: true,
                created_at: None,
            }],
            ssh_keys: Vec::new(),
            legacy_aws_keys: None,
        });
    }
    let mut out_contexts = Vec::with_capacity(contexts);
    for c in 0..contexts {
        let updated = taken_at - Duration::days(rng.below(700) as i64);
        let mut variables: Vec<ContextVar> = Vec::with_capacity(ctx_vars);
        let push = |variables: &mut Vec<ContextVar>, name: String| {
            if variables.len() < ctx_vars {
                variables.push(ContextVar {
                    name: name.into(),
                    created_at: None,
                    updated_at: Some(updated),
                });
            }
        };
        push(&mut variables, format!("CONTEXT_{c}_AWS_ACCESS_KEY_ID"));
        push(&mut variables, format!("CONTEXT_{c}_AWS_SECRET_ACCESS_KEY"));
        let first = rng.below(TOKENS.len() as u64) as usize;
        for i in 0..12 {
            let t = TOKENS[(first + i) % TOKENS.len()];
            push(&mut variables, format!("CTX{c}_{t}"));
        }
        push(&mut variables, "AWS_REGION".into());
        let mut k = rng.below(100);
        while variables.len() < ctx_vars {
            push(&mut variables, format!("SHARED_SETTING_{k}"));
            k += 1;
        }
        out_contexts.push(Context {
            id: format!("ctx-{c:04}"),
            name: format!("context-{c:04}"),
            created_at: None,
            variables,
        });
    }
    Inventory {
        source: InventorySource::CircleciApi,
        org: Some("gh/acme".into()),
        taken_at,
        projects: out_projects,
        contexts: out_contexts,
        errors: Vec::new(),
    }
}

/// A planner's YAML with every REVIEW-REQUIRED decided the way a tired reviewer would, one
/// distinct owner per target (`user: ci-7`, `repository: acme/repo-7`, a service account, an
/// exec command): what the benchmark and the scale tests validate and dry-run. Not a real
/// review — only a plan of the right size and shape.
pub fn decide_review_required(yaml: &str) -> String {
    const MARK: &str = "REVIEW-REQUIRED";
    let mut out = String::with_capacity(yaml.len() + yaml.len() / 16);
    let mut n = 0usize;
    for line in yaml.split_inclusive('\n') {
        if !line.contains(MARK) || line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        n += 1;
        let decided = line
            .replace(
                "service_account: REVIEW-REQUIRED",
                &format!("service_account: ci-{n}@acme-prod.iam.gserviceaccount.com"),
            )
            .replace(
                "repository: REVIEW-REQUIRED",
                &format!("repository: acme/repo-{n}"),
            )
            .replace("[REVIEW-REQUIRED]", "[/usr/local/bin/rotate-token]")
            .replace(MARK, &format!("ci-{n}"));
        out.push_str(&decided);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_synthetic_inventory_has_the_requested_shape() {
        let inv = synthetic_inventory(50, 30, 5, 20);
        assert_eq!(inv.projects.len(), 50);
        assert!(inv.projects.iter().all(|p| p.env_vars.len() == 30));
        assert!(inv.contexts.iter().all(|c| c.variables.len() == 20));
        for p in &inv.projects {
            let mut names: Vec<&str> = p.env_vars.iter().map(|v| v.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), 30, "{} has duplicate names", p.slug);
        }
        assert_eq!(inv, synthetic_inventory(50, 30, 5, 20), "deterministic");
    }
}
