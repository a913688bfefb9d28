//! Classification: a fixture inventory covering every kind of credential, user rules and their
//! precedence, located rule-file errors, and determinism under shuffled input.

use rekey::classify::{
    Candidate, Classification, ClassifyError, RuleSet, classify, synthetic::synthetic_inventory,
};
use rekey::inventory::Inventory;
use rekey::plan::{Confidence, Encoding, Finding, Located, ProviderKind, REVIEW_REQUIRED};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/classify")
        .join(name)
}

fn fixture() -> Inventory {
    let text = std::fs::read_to_string(fixture_path("inventory.json")).expect("fixture");
    serde_json::from_str::<Inventory>(&text).expect("fixture parses as an Inventory")
}

fn builtin() -> RuleSet {
    RuleSet::builtin().expect("built-in rules compile")
}

/// One line per target: provider, id, confidence, `unconfirmed` when so, rule, then bindings.
fn summary(c: &Classification) -> Vec<String> {
    c.targets
        .iter()
        .map(|cand| {
            let t = &cand.target;
            let bindings: Vec<String> = t
                .bindings
                .iter()
                .map(|b| {
                    let mut vars: Vec<String> = b
                        .vars
                        .iter()
                        .map(|(k, v)| format!("{}={}", k.as_str(), v.as_str()))
                        .collect();
                    if b.aws_keypair {
                        vars.push("aws_keypair".into());
                    }
                    if let Some(host) = &b.ssh_hostname {
                        vars.push(format!("ssh_hostname={}", host.as_str()));
                    }
                    let place = b.place().map(|p| p.to_string()).unwrap_or_default();
                    format!(" {place}{{{}}}", vars.join(","))
                })
                .collect();
            format!(
                "{} {} {}{} [{}]{}",
                t.provider.value,
                t.id.as_str(),
                t.confidence.as_str(),
                if t.confirmed { "" } else { " unconfirmed" },
                cand.rule,
                bindings.concat()
            )
        })
        .collect()
}

fn findings(list: &[Finding]) -> Vec<String> {
    list.iter()
        .map(|f| {
            format!(
                "{}: {} — {}",
                f.place().map(|p| p.to_string()).unwrap_or_default(),
                f.var,
                f.reason
            )
        })
        .collect()
}

fn target<'a>(c: &'a Classification, id: &str) -> &'a Candidate {
    c.targets
        .iter()
        .find(|t| t.target.id.as_str() == id)
        .unwrap_or_else(|| panic!("no target {id}"))
}

#[test]
fn fixture_targets_grouping_and_ids() {
    let c = classify(&fixture(), &builtin());
    let expected = [
        "aws-iam aws-api high [aws-access-key] project gh/acme/api{access_key_id=AWS_ACCESS_KEY_ID,secret_access_key=AWS_SECRET_ACCESS_KEY} project gh/acme/web{access_key_id=AWS_ACCESS_KEY_ID,secret_access_key=AWS_SECRET_ACCESS_KEY}",
        "aws-iam aws-legacy medium [aws-legacy-keypair] project gh/acme/api{aws_keypair} project gh/acme/worker{aws_keypair}",
        "aws-iam aws-prod medium unconfirmed [aws-access-key] context aws-prod{access_key_id=AWS_ACCESS_KEY_ID,secret_access_key=AWS_SECRET_ACCESS_KEY} context aws-staging{access_key_id=AWS_ACCESS_KEY_ID,secret_access_key=AWS_SECRET_ACCESS_KEY}",
        "aws-iam aws-prod-api high [aws-access-key] project gh/acme/api{access_key_id=PROD_AWS_ACCESS_KEY_ID,secret_access_key=PROD_AWS_SECRET_ACCESS_KEY}",
        "aws-iam aws-staging high [aws-access-key] project gh/acme/web{access_key_id=AWS_ACCESS_KEY_ID_STAGING,secret_access_key=AWS_SECRET_ACCESS_KEY_STAGING}",
        // Same access key id mask as aws-api but another secret: every mask must agree.
        "aws-iam aws-worker high [aws-access-key] project gh/acme/worker{access_key_id=AWS_ACCESS_KEY_ID,secret_access_key=AWS_SECRET_ACCESS_KEY}",
        "github-deploy-key deploy-key-docs medium [github-deploy-key] project gh/acme/web{private_key=DOCS_DEPLOY_KEY}",
        "github-deploy-key deploy-key-ssh-private medium [github-deploy-key] context aws-staging{private_key=SSH_PRIVATE_KEY}",
        "circleci-checkout-key circleci-checkout-key-api high [circleci-checkout-key]",
        "circleci-checkout-key circleci-checkout-key-web high [circleci-checkout-key]",
        "circleci-ssh-key ssh-key-bastion-example-com high [circleci-ssh-key] project gh/acme/web{ssh_hostname=bastion.example.com} project gh/acme/worker{ssh_hostname=bastion.example.com}",
        "github-token github-token-api high [github-token] project gh/acme/api{token=GITHUB_TOKEN} project gh/acme/web{token=GITHUB_TOKEN}",
        "github-token github-token-gh high [github-token] context release{token=GH_TOKEN}",
        "gcp-sa-key gcp-gcloud-service-key high [gcp-gcloud-service-key] project gh/acme/api{key_json=GCLOUD_SERVICE_KEY}",
        "gcp-sa-key gcp-google-credentials high [gcp-sa-key-json] project gh/acme/web{key_json=GOOGLE_CREDENTIALS}",
        "gcp-sa-key gcp-sa-key high [gcp-sa-key] project gh/acme/worker{key_json=GCP_SA_KEY}",
        // AZURE_* and ARM_* are two namespaces: ARM_CLIENT_ID goes with ARM_CLIENT_SECRET only.
        "azure-app-secret azure-api high [azure-client-secret] project gh/acme/api{client_secret=AZURE_CLIENT_SECRET,tenant_id=AZURE_TENANT_ID}",
        "azure-app-secret azure-arm high [azure-client-secret] project gh/acme/api{client_id=ARM_CLIENT_ID,client_secret=ARM_CLIENT_SECRET,tenant_id=ARM_TENANT_ID}",
        "azure-app-secret azure-web high [azure-client-secret] project gh/acme/web{client_secret=AZURE_CLIENT_SECRET}",
        "exec circleci-token high [circleci-api-token] project gh/acme/worker{token=CIRCLECI_TOKEN}",
        "exec cloudflare-api-token high [cloudflare-token] project gh/acme/worker{token=CLOUDFLARE_API_TOKEN}",
        "exec codecov-token high [codecov-token] project gh/acme/web{token=CODECOV_TOKEN}",
        "exec datadog-api-key high [datadog-key] project gh/acme/worker{key=DATADOG_API_KEY}",
        "exec dockerhub-password high [dockerhub-password] project gh/acme/api{password=DOCKERHUB_PASSWORD}",
        "exec heroku-api-key high [heroku-api-key] project gh/acme/worker{api_key=HEROKU_API_KEY}",
        "exec netlify-auth-token high [netlify-token] project gh/acme/worker{token=NETLIFY_AUTH_TOKEN}",
        // Different masks: three credentials under one name; the place tells them apart.
        "exec npm-token-api high [npm-token] project gh/acme/api{token=NPM_TOKEN}",
        "exec npm-token-release high [npm-token] context release{token=NPM_TOKEN}",
        "exec npm-token-web high [npm-token] project gh/acme/web{token=NPM_TOKEN}",
        "exec nuget-api-key high [nuget-api-key] project gh/acme/worker{api_key=NUGET_API_KEY}",
        "exec private-key-signing low [pem-private-key] project gh/acme/web{private_key=SIGNING_KEY}",
        "exec pypi-twine-password high [pypi-token] project gh/acme/worker{token=TWINE_PASSWORD}",
        "exec rubygems-gem-host-api-key high [rubygems-api-key] project gh/acme/worker{api_key=GEM_HOST_API_KEY}",
        "exec sendgrid-api-key high [sendgrid-api-key] project gh/acme/worker{api_key=SENDGRID_API_KEY}",
        "exec sentry-auth-token high [sentry-auth-token] project gh/acme/web{token=SENTRY_AUTH_TOKEN}",
        "exec slack-bot-token high [slack-token] project gh/acme/worker{token=SLACK_BOT_TOKEN}",
        "exec slack-webhook high [slack-webhook] context aws-prod{webhook_url=SLACK_WEBHOOK}",
        "exec slack-webhook-url high [slack-webhook] project gh/acme/web{webhook_url=SLACK_WEBHOOK_URL}",
        "exec snyk-token high [snyk-token] project gh/acme/worker{token=SNYK_TOKEN}",
        "exec sonar-token high [sonarcloud-token] project gh/acme/worker{token=SONAR_TOKEN}",
        "exec stripe-secret-key high [stripe-secret-key] project gh/acme/worker{secret_key=STRIPE_SECRET_KEY}",
        "exec terraform-cloud-tf-api-token high [terraform-cloud-token] project gh/acme/worker{token=TF_API_TOKEN}",
        "exec twilio-worker high [twilio-auth-token] project gh/acme/worker{account_sid=TWILIO_ACCOUNT_SID,auth_token=TWILIO_AUTH_TOKEN}",
        "exec vercel-token high [vercel-token] project gh/acme/worker{token=VERCEL_TOKEN}",
    ];
    assert_eq!(summary(&c), expected);
}

#[test]
fn fixture_ignored_and_unclassified_exactly() {
    let c = classify(&fixture(), &builtin());
    assert_eq!(
        findings(&c.ignored),
        [
            "project gh/acme/api: AWS_DEFAULT_REGION — AWS configuration (region, account, role or bucket), not a secret",
            "project gh/acme/api: DOCKER_USERNAME — a user, account or organization name, not a secret",
            "project gh/acme/api: NODE_ENV — runtime or build configuration, not a secret",
            "project gh/acme/web: ARM_CLIENT_ID — an identifier, not a secret (no credential of the same name family beside it)",
            "project gh/acme/web: AWS_REGION — AWS configuration (region, account, role or bucket), not a secret",
            "project gh/acme/web: checkout key SHA256:web-user — github-user-key checkout key: it is a key of a person's GitHub account, which rekey cannot mint; that person deletes it at GitHub (Settings → SSH keys) and adds a new user key in Project Settings → SSH Keys",
            "project gh/acme/worker: STRIPE_PUBLISHABLE_KEY — public material (public key, certificate or fingerprint), not a secret",
            "project gh/acme/worker: TWINE_USERNAME — a user, account or organization name, not a secret",
            "project gh/acme/worker: VERCEL_ORG_ID — an identifier, not a secret (no credential of the same name family beside it)",
            "project gh/acme/worker: checkout key — the project has no checkout key: nothing to rotate (CircleCI checks it out through the GitHub App, or jobs cannot clone it; add one in Project Settings → SSH Keys if they need to)",
            "context aws-prod: AWS_REGION — AWS configuration (region, account, role or bucket), not a secret",
        ]
    );
    assert_eq!(
        findings(&c.unclassified),
        [
            "project gh/acme/api: INTERNAL_API_TOKEN — name suggests a secret (…_TOKEN) but no rule knows its owner",
            "project gh/acme/api: MYSTERY_CONFIG — no rule matched",
            // Half pairs are reported with what is missing, never dropped.
            "project gh/acme/worker: AWS_ACCESS_KEY_ID_OLD — AWS_ACCESS_KEY_ID_OLD without its AWS_SECRET_ACCESS_KEY_OLD",
            "project gh/acme/worker: DATABASE_URL — name suggests a secret (…_URL, which often embeds credentials) but no rule knows its owner",
            "context release: AWS_SECRET_ACCESS_KEY — AWS_SECRET_ACCESS_KEY without its AWS_ACCESS_KEY_ID",
        ]
    );
}

#[test]
fn fixture_every_variable_is_accounted_for_once() {
    let inv = fixture();
    let c = classify(&inv, &builtin());
    let mut seen: Vec<(String, String)> = Vec::new();
    for t in &c.targets {
        for b in &t.target.bindings {
            let place = b.place().map(|p| p.to_string()).unwrap_or_default();
            for var in b.vars.values() {
                seen.push((place.clone(), var.to_string()));
            }
        }
    }
    // Keys are reported beside variables (a user key, a project without a checkout key).
    for f in c
        .ignored
        .iter()
        .chain(&c.unclassified)
        .filter(|f| !f.var.starts_with("checkout key"))
    {
        seen.push((
            f.place().map(|p| p.to_string()).unwrap_or_default(),
            f.var.to_string(),
        ));
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a variable was used twice");
    assert_eq!(seen.len(), inv.variable_count(), "a variable was dropped");
}

#[test]
fn fixture_target_details() {
    let c = classify(&fixture(), &builtin());
    let review = Some(Located::new(REVIEW_REQUIRED.to_string()));

    // Project group: observed masks of every field in every project; the owner is discovered later.
    let aws = target(&c, "aws-api");
    assert_eq!(
        aws.reason,
        "AWS access key pair (AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY), same masked last four WXYZ in 2 projects"
    );
    assert_eq!(aws.target.principal.user().cloned(), review);
    let observed: Vec<String> = aws
        .target
        .observed
        .iter()
        .map(|o| {
            format!(
                "{} {} {}",
                o.project.as_deref().unwrap(),
                o.var.as_deref().unwrap(),
                o.masked.as_ref().unwrap()
            )
        })
        .collect();
    assert_eq!(
        observed,
        [
            "gh/acme/api AWS_ACCESS_KEY_ID xxxxWXYZ",
            "gh/acme/api AWS_SECRET_ACCESS_KEY xxxxS3CR",
            "gh/acme/web AWS_ACCESS_KEY_ID xxxxWXYZ",
            "gh/acme/web AWS_SECRET_ACCESS_KEY xxxxS3CR",
        ]
    );
    assert!(aws.target.exec.is_none());

    // Context group: no values to compare, so medium and unconfirmed; context ids and updated_at kept.
    let ctx = target(&c, "aws-prod");
    assert_eq!(
        (ctx.target.confidence, ctx.target.confirmed),
        (Confidence::Medium, false)
    );
    let ids: Vec<_> = ctx
        .target
        .bindings
        .iter()
        .map(|b| b.context_id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["c-1", "c-2"]);
    assert_eq!(ctx.target.observed.len(), 4);
    assert!(
        ctx.target
            .observed
            .iter()
            .all(|o| o.context.is_some() && o.updated_at.is_some() && o.masked.is_none())
    );
    assert!(
        ctx.reason.contains("2 contexts (aws-prod, aws-staging)"),
        "{}",
        ctx.reason
    );

    // A single context is not a grouping: the rule's confidence stands.
    let gh = target(&c, "github-token-gh");
    assert_eq!(
        (gh.target.confidence, gh.target.confirmed),
        (Confidence::High, true)
    );

    // Encodings: GCLOUD_SERVICE_KEY by convention base64, unless its mask ends like JSON.
    let key_json = Located::new("key_json".into());
    let gcloud = target(&c, "gcp-gcloud-service-key");
    assert_eq!(
        gcloud.target.bindings[0]
            .encoding
            .get(&key_json)
            .map(|e| e.value),
        Some(Encoding::Base64)
    );
    assert_eq!(gcloud.target.principal.service_account().cloned(), review);
    assert!(
        target(&c, "gcp-google-credentials").target.bindings[0]
            .encoding
            .is_empty()
    );
    assert!(
        target(&c, "gcp-sa-key").target.bindings[0]
            .encoding
            .is_empty()
    );

    let azure = target(&c, "azure-arm");
    assert_eq!(
        (
            azure.target.principal.app_id().cloned(),
            azure.target.principal.tenant_id().cloned()
        ),
        (review.clone(), review.clone())
    );

    let deploy = target(&c, "deploy-key-docs");
    assert_eq!(deploy.target.principal.repository().cloned(), review);
    assert_eq!(deploy.target.confidence, Confidence::Medium);

    // Checkout keys: one target per key, no bindings, observed fingerprint.
    let checkout = target(&c, "circleci-checkout-key-api");
    assert_eq!(
        checkout.target.principal.project().map(|v| v.as_str()),
        Some("gh/acme/api")
    );
    assert!(checkout.target.bindings.is_empty());
    assert_eq!(
        checkout.target.observed[0].fingerprint.as_deref(),
        Some("SHA256:api-deploy")
    );

    // Additional SSH key: the same fingerprint in two projects is one key, bound in each for its
    // host; the reviewer decides how the public half is installed; the reason names the host.
    let ssh = target(&c, "ssh-key-bastion-example-com");
    assert_eq!(ssh.target.confidence, Confidence::High);
    assert_eq!(ssh.target.provider.value, ProviderKind::CircleciSshKey);
    assert_eq!(
        ssh.target
            .ssh_key
            .as_ref()
            .and_then(|h| h.install.as_ref())
            .map(|c| c.value.clone()),
        Some(vec![REVIEW_REQUIRED.to_string()])
    );
    assert!(
        ssh.reason.contains("bastion.example.com") && ssh.reason.contains(".circleci/config.yml"),
        "{}",
        ssh.reason
    );
    let projects: Vec<_> = ssh
        .target
        .observed
        .iter()
        .map(|o| o.project.as_deref().unwrap().as_str())
        .collect();
    assert_eq!(projects, ["gh/acme/web", "gh/acme/worker"]);

    // Legacy key pair of project settings: pseudo-variables, masks observed, medium confidence.
    let legacy = target(&c, "aws-legacy");
    assert_eq!(legacy.target.confidence, Confidence::Medium);
    assert_eq!(legacy.target.observed.len(), 2);
    assert!(
        legacy
            .target
            .bindings
            .iter()
            .all(|b| b.aws_keypair && b.vars.is_empty())
    );
    assert_eq!(
        legacy.target.observed[0]
            .masked
            .as_ref()
            .map(|m| m.as_str()),
        Some("xxxxLGC1")
    );

    // Exec targets: the service is named, commands wait for a reviewer.
    for cand in c
        .targets
        .iter()
        .filter(|t| t.target.provider.value == ProviderKind::Exec)
    {
        let exec = cand
            .target
            .exec
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no exec", cand.target.id.as_str()));
        for (name, cmd) in exec.all() {
            assert_eq!(
                cmd.value,
                [REVIEW_REQUIRED],
                "{} {name}",
                cand.target.id.as_str()
            );
        }
        assert!(
            cand.target.principal.service().is_some(),
            "{}",
            cand.target.id.as_str()
        );
    }
    assert_eq!(
        target(&c, "npm-token-api")
            .target
            .principal
            .service()
            .map(|v| v.as_str()),
        Some("npm")
    );
    let twilio = target(&c, "twilio-worker");
    assert_eq!(
        twilio.reason,
        "Twilio auth token (TWILIO_AUTH_TOKEN + TWILIO_ACCOUNT_SID) in project gh/acme/worker"
    );
}

#[test]
fn user_rules_take_precedence_and_replace_builtins() {
    let user = RuleSet::load_file(&fixture_path("user-rules.yaml")).expect("user rules load");
    let rules = builtin().extend(user);
    assert_eq!(
        rules.rule_names().take(4).collect::<Vec<_>>(),
        [
            "internal-api-token",
            "npm-token",
            "codecov-public",
            "mystery"
        ]
    );
    assert_eq!(
        rules.rule_names().filter(|n| *n == "npm-token").count(),
        1,
        "the built-in npm-token is replaced"
    );

    let c = classify(&fixture(), &rules);
    let internal = target(&c, "internal-api-token");
    assert_eq!(internal.rule, "internal-api-token");
    assert_eq!(internal.target.confidence, Confidence::Medium);
    let exec = internal.target.exec.as_ref().unwrap();
    assert_eq!(exec.mint.value, ["acme-tokens", "mint"]);
    assert_eq!(
        exec.mint.pos.line, 0,
        "no rule-file position leaks into plans"
    );

    let registry: Vec<_> = c
        .targets
        .iter()
        .filter(|t| t.rule == "npm-token")
        .map(|t| t.target.id.as_str())
        .collect();
    assert_eq!(
        registry,
        [
            "registry-npm-token-api",
            "registry-npm-token-release",
            "registry-npm-token-web"
        ]
    );
    assert_eq!(
        target(&c, "registry-npm-token-api")
            .target
            .principal
            .service()
            .map(|v| v.as_str()),
        Some("Acme registry")
    );

    let ignored = findings(&c.ignored);
    assert!(ignored.contains(&"project gh/acme/web: CODECOV_TOKEN — public repository upload token, not a secret here".to_string()));
    assert!(ignored.contains(
        &"project gh/acme/api: MYSTERY_CONFIG — feature switches, not a secret".to_string()
    ));
    assert!(!c.targets.iter().any(|t| t.rule == "codecov-token"));
    assert_eq!(
        findings(&c.unclassified),
        [
            "project gh/acme/worker: AWS_ACCESS_KEY_ID_OLD — AWS_ACCESS_KEY_ID_OLD without its AWS_SECRET_ACCESS_KEY_OLD",
            "project gh/acme/worker: DATABASE_URL — name suggests a secret (…_URL, which often embeds credentials) but no rule knows its owner",
            "context release: AWS_SECRET_ACCESS_KEY — AWS_SECRET_ACCESS_KEY without its AWS_ACCESS_KEY_ID",
        ]
    );
}

#[test]
fn bad_regex_names_file_line_column_and_rule() {
    let path = fixture_path("bad-regex.yaml");
    let err = RuleSet::load_file(&path).expect_err("bad regex");
    assert!(
        matches!(&err, ClassifyError::Invalid { rule: Some(r), .. } if r == "broken"),
        "{err:?}"
    );
    assert_eq!(err.location(), Some((8, 14)));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}:8:14: rule `broken`: field `token`: var: invalid regex",
            path.display()
        )),
        "{text}"
    );
}

#[test]
fn unknown_field_names_file_line_column() {
    let path = fixture_path("unknown-field.yaml");
    let err = RuleSet::load_file(&path).expect_err("unknown field");
    let (line, _) = err.location().expect("located");
    assert_eq!(line, 9, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:9:", path.display())),
        "{text}"
    );
    assert!(text.contains("requird"), "{text}");
    assert!(!text.contains("at line"), "location rendered once: {text}");
}

#[test]
fn missing_rule_file_is_an_error_naming_it() {
    let err = RuleSet::load_file(&fixture_path("no-such-rules.yaml")).expect_err("missing");
    assert!(matches!(err, ClassifyError::Read { .. }));
    assert!(err.to_string().contains("no-such-rules.yaml"));
}

/// A permutation from a seed, without a random-number crate.
fn shuffle<T>(items: &mut [T], seed: &mut u64) {
    for i in (1..items.len()).rev() {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((*seed >> 33) as usize) % (i + 1);
        items.swap(i, j);
    }
}

fn shuffled(inv: &Inventory, mut seed: u64) -> Inventory {
    let mut inv = inv.clone();
    shuffle(&mut inv.projects, &mut seed);
    shuffle(&mut inv.contexts, &mut seed);
    for p in &mut inv.projects {
        shuffle(&mut p.env_vars, &mut seed);
        shuffle(&mut p.checkout_keys, &mut seed);
        shuffle(&mut p.ssh_keys, &mut seed);
    }
    for c in &mut inv.contexts {
        shuffle(&mut c.variables, &mut seed);
    }
    inv
}

#[test]
fn output_does_not_depend_on_inventory_order() {
    let rules = builtin();
    for inv in [fixture(), synthetic_inventory(300, 30, 20, 20)] {
        let reference = classify(&inv, &rules);
        for seed in 1..=5 {
            assert_eq!(
                classify(&shuffled(&inv, seed), &rules),
                reference,
                "seed {seed}"
            );
        }
    }
}

#[test]
fn synthetic_ids_are_unique_and_kebab() {
    let c = classify(&synthetic_inventory(500, 30, 30, 20), &builtin());
    let ids: BTreeSet<&str> = c.targets.iter().map(|t| t.target.id.as_str()).collect();
    assert_eq!(ids.len(), c.targets.len());
    assert!(ids.iter().all(|id| {
        !id.is_empty()
            && id
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            && !id.starts_with('-')
            && !id.ends_with('-')
            && !id.contains("--")
    }));
}

#[test]
fn yaml_errors_are_located_without_a_rule_file() {
    let err = RuleSet::from_yaml(
        "credentials:\n  - name: x\n    provider: aws\n",
        "inline.yaml",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("inline.yaml:3:15: unknown variant `aws`"),
        "{err}"
    );
    let err = RuleSet::from_yaml("credentials: [\n", "inline.yaml").unwrap_err();
    assert_eq!(err.to_string(), "inline.yaml:1:14: unclosed bracket '['");
}
