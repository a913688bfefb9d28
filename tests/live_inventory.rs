//! The live inventory against the CircleCI sandbox: pagination, rate limits, server errors,
//! unreadable projects and contexts, and that no value or token ever reaches the output.

use std::collections::BTreeMap;
use std::time::Duration;

use rekey::circleci::CircleCiClient;
use rekey::http::RetryPolicy;
use rekey::inventory::live::{LiveError, LiveOptions, take_live};
use rekey::inventory::{ErrorScope, Inventory, InventorySource};
use rekey::sandbox::{CircleCiState, ContextSpec, ProjectSpec, RecordedRequest, Sandbox, demo_org};
use rekey::secret::Secret;

/// Short waits so that retries cost milliseconds, but a `Retry-After` of seconds still counts.
fn test_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 6,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    }
}

async fn start(state: CircleCiState) -> (Sandbox, CircleCiClient) {
    let token = state.token().to_owned();
    let sandbox = Sandbox::start(state).await.expect("sandbox starts");
    let client = CircleCiClient::new(&sandbox.base_url(), Secret::new(token))
        .expect("client")
        .with_retry_policy(test_policy());
    (sandbox, client)
}

fn acme() -> LiveOptions {
    LiveOptions {
        org: Some("gh/acme".into()),
        ..LiveOptions::default()
    }
}

/// `xxxx` + last four characters of `value`.
fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("xxxx{tail}")
}

/// Checks every variable of the inventory against the sandbox's stored values.
fn assert_matches_state(inventory: &Inventory, state: &CircleCiState) {
    for project in &inventory.projects {
        let stored = state.project_by_slug(&project.slug).expect("known project");
        let names: Vec<&str> = project.env_vars.iter().map(|v| v.name.as_str()).collect();
        let expected: Vec<&str> = stored.env_vars.keys().map(String::as_str).collect();
        assert_eq!(names, expected, "variables of {}", project.slug);
        for var in &project.env_vars {
            assert_eq!(
                var.masked.as_str(),
                mask(&stored.env_vars[var.name.as_str()].value),
                "{} {}",
                project.slug,
                var.name
            );
            assert!(var.created_at.is_some());
        }
        assert_eq!(project.checkout_keys.len(), stored.checkout_keys.len());
        assert_eq!(project.ssh_keys.len(), stored.ssh_keys.len());
        match (&project.legacy_aws_keys, &stored.aws_keypair) {
            (Some(seen), Some(pair)) => {
                assert_eq!(seen.access_key_id.as_str(), mask(&pair.access_key_id));
                assert_eq!(
                    seen.secret_access_key.as_str(),
                    mask(&pair.secret_access_key)
                );
            }
            (None, None) => {}
            other => panic!("legacy AWS keys of {}: {other:?}", project.slug),
        }
    }
    for context in &inventory.contexts {
        let stored = state.context_by_name(&context.name).expect("known context");
        assert_eq!(context.id, stored.id);
        let names: Vec<&str> = context.variables.iter().map(|v| v.name.as_str()).collect();
        let expected: Vec<&str> = stored.vars.keys().map(String::as_str).collect();
        assert_eq!(names, expected, "variables of context {}", context.name);
    }
}

/// Requests to `path`, in order.
fn on_path<'a>(log: &'a [RecordedRequest], path: &str) -> Vec<&'a RecordedRequest> {
    log.iter().filter(|r| r.path == path).collect()
}

/// A listing read across pages: the first request without `page-token`, every later one on
/// the same path with a fresh token, all answered 200.
fn assert_paged(log: &[RecordedRequest], path: &str, min_pages: usize) {
    let requests = on_path(log, path);
    assert!(
        requests.len() >= min_pages,
        "{path}: {} requests, expected at least {min_pages}",
        requests.len()
    );
    assert!(
        !requests[0].has_query_param("page-token"),
        "{path}: first page"
    );
    let mut tokens: Vec<String> = requests[1..]
        .iter()
        .map(|r| {
            r.query_param("page-token")
                .expect("later pages carry page-token")
        })
        .collect();
    assert!(
        requests.iter().all(|r| r.status == 200),
        "{path}: {requests:?}"
    );
    let count = tokens.len();
    tokens.sort();
    tokens.dedup();
    assert_eq!(tokens.len(), count, "{path}: a page token was reused");
}

#[tokio::test]
async fn inventories_the_demo_org_read_only_and_sorted() {
    let state = demo_org();
    let (sandbox, client) = start(state.clone()).await;
    let inventory = take_live(&client, &acme()).await.expect("inventory");

    assert_eq!(inventory.source, InventorySource::CircleciApi);
    assert_eq!(inventory.org.as_deref(), Some("gh/acme"));
    assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
    let slugs: Vec<&str> = inventory.projects.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(
        slugs,
        [
            "gh/acme/api",
            "gh/acme/docs",
            "gh/acme/infra",
            "gh/acme/web"
        ]
    );
    let contexts: Vec<&str> = inventory.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(contexts, ["aws-prod", "notifications", "release"]);
    assert_matches_state(&inventory, &state);
    let infra = &inventory.projects[2];
    assert!(infra.legacy_aws_keys.is_some());
    assert_eq!(infra.ssh_keys[0].hostname, "bastion.acme.example");
    let web = &inventory.projects[3];
    let mut kinds: Vec<&str> = web
        .checkout_keys
        .iter()
        .map(|k| k.key_type.as_str())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["deploy-key", "github-user-key"]);
    assert!(
        inventory.contexts[0]
            .variables
            .iter()
            .all(|v| v.updated_at.is_some())
    );

    // Reading changes nothing.
    assert!(sandbox.mutating_requests().is_empty());
    // Deterministic: a second run gives the same inventory (but for the time it was taken).
    let mut again = take_live(&client, &acme()).await.expect("inventory");
    again.taken_at = inventory.taken_at;
    assert_eq!(again, inventory);
}

#[tokio::test]
async fn follows_next_page_token_on_the_same_endpoint() {
    let mut state = demo_org().with_page_size(2);
    // Eight contexts (four pages), one of them with five variables (three pages).
    let mut big = ContextSpec::new("gh/acme", "big");
    for i in 0..5 {
        big = big.env(format!("BIG_{i}"), format!("value-{i}-{}", state.token()));
    }
    state.add_context(big);
    for name in ["c-one", "c-two", "c-three", "c-four"] {
        state.add_context(ContextSpec::new("gh/acme", name).env("X", "some-value"));
    }
    let (sandbox, client) = start(state.clone()).await;
    let inventory = take_live(&client, &acme()).await.expect("inventory");
    assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
    assert_eq!(inventory.contexts.len(), 8);
    assert_matches_state(&inventory, &state);
    let api = &inventory.projects[0];
    assert_eq!(api.env_vars.len(), 6);

    let log = sandbox.requests();
    // Project variables: 6 at 2 a page.
    assert_paged(&log, "/api/v2/project/gh/acme/api/envvar", 3);
    // Contexts: 8 at 2 a page, the owner filter repeated on every page.
    assert_paged(&log, "/api/v2/context", 4);
    assert!(
        on_path(&log, "/api/v2/context")
            .iter()
            .all(|r| r.query_param("owner-slug").as_deref() == Some("gh/acme"))
    );
    // Context variables: 5 at 2 a page.
    let big_id = &state.context_by_name("big").expect("big").id;
    assert_paged(
        &log,
        &format!("/api/v2/context/{big_id}/environment-variable"),
        3,
    );
    // Nothing was refused, so no page URL was built wrongly.
    assert!(log.iter().all(|r| r.status == 200), "{log:?}");
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let state = demo_org();
    let (sandbox, client) = start(state.clone()).await;
    let path = "/api/v2/project/gh/acme/api/envvar";
    sandbox
        .throttle(&format!("^{path}$"), 1, Duration::from_secs(1))
        .expect("pattern");
    let inventory = take_live(&client, &acme()).await.expect("inventory");
    assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
    assert_matches_state(&inventory, &state);

    let log = sandbox.requests();
    let requests = on_path(&log, path);
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 200]);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}, Retry-After said 1 s"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
}

#[tokio::test]
async fn retries_server_errors() {
    let state = demo_org();
    let (sandbox, client) = start(state.clone()).await;
    // Ten attempts: with the forced failures below and 20 % of the rest failing, a read that
    // is still lost after ten is about one in a million.
    let client = client.with_retry_policy(RetryPolicy {
        max_attempts: 10,
        ..test_policy()
    });
    sandbox
        .fail_next("/checkout-key$", 2, 503)
        .expect("pattern");
    sandbox.fail_next("/settings$", 1, 502).expect("pattern");
    // And a seeded 20 % of everything.
    sandbox.set_error_rate(0.2, 2023);
    let inventory = take_live(&client, &acme()).await.expect("inventory");
    assert!(inventory.errors.is_empty(), "{:?}", inventory.errors);
    assert_eq!(inventory.projects.len(), 4);
    assert_eq!(inventory.contexts.len(), 3);
    assert_matches_state(&inventory, &state);

    let log = sandbox.requests();
    let failed: Vec<&RecordedRequest> = log.iter().filter(|r| r.status >= 500).collect();
    assert!(failed.len() >= 3, "{log:?}");
    // Every path that failed was read successfully afterwards.
    for f in &failed {
        assert!(
            log.iter()
                .any(|r| r.path == f.path && r.query == f.query && r.status == 200 && r.at > f.at),
            "{} was never read after its {}",
            f.path,
            f.status
        );
    }
}

#[tokio::test]
async fn unreadable_places_become_error_entries() {
    let mut state = demo_org();
    state.add_project(
        ProjectSpec::new("gh/acme/locked")
            .env("SECRET", "locked-value-1234")
            .forbidden(),
    );
    let (sandbox, client) = start(state.clone()).await;
    // One context whose variables stay unreadable through every retry.
    let release_id = state
        .context_by_name("release")
        .expect("release")
        .id
        .clone();
    sandbox
        .fail_next(&format!("^/api/v2/context/{release_id}/"), 100, 500)
        .expect("pattern");
    // And a project whose settings alone stay unreadable.
    sandbox
        .fail_next("^/api/v1.1/project/github/acme/docs/settings$", 100, 500)
        .expect("pattern");

    let opts = LiveOptions {
        projects: vec!["gh/acme/ghost".into(), "gh/acme/api".into()],
        ..acme()
    };
    let inventory = take_live(&client, &opts).await.expect("inventory");

    let errors: Vec<(ErrorScope, &str, Option<u16>, &str)> = inventory
        .errors
        .iter()
        .map(|e| (e.scope, e.name.as_str(), e.status, e.message.as_str()))
        .collect();
    assert_eq!(
        errors,
        [
            (
                ErrorScope::Project,
                "gh/acme/docs",
                Some(500),
                "settings: Internal server error"
            ),
            (
                ErrorScope::Project,
                "gh/acme/ghost",
                Some(404),
                "Project not found"
            ),
            (
                ErrorScope::Project,
                "gh/acme/locked",
                Some(403),
                "Permission denied"
            ),
            (
                ErrorScope::Context,
                "release",
                Some(500),
                "Internal server error"
            ),
        ]
    );
    // The rest is all there; docs keeps what it could read.
    let slugs: Vec<&str> = inventory.projects.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(
        slugs,
        [
            "gh/acme/api",
            "gh/acme/docs",
            "gh/acme/infra",
            "gh/acme/web"
        ]
    );
    assert_eq!(inventory.projects[1].env_vars.len(), 3);
    assert!(inventory.projects[1].ssh_keys.is_empty());
    let contexts: Vec<&str> = inventory.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(contexts, ["aws-prod", "notifications"]);
    // The release context was tried max_attempts times, no more.
    let tries = sandbox
        .requests()
        .iter()
        .filter(|r| {
            r.path
                .starts_with(&format!("/api/v2/context/{release_id}/"))
        })
        .count();
    assert_eq!(tries, test_policy().max_attempts as usize);
}

#[tokio::test]
async fn no_value_beyond_the_last_four_characters_reaches_the_inventory() {
    let state = demo_org();
    let (_sandbox, client) = start(state.clone()).await;
    let inventory = take_live(&client, &acme()).await.expect("inventory");
    let json = serde_json::to_string_pretty(&inventory).expect("json");
    let debug = format!("{inventory:?}");

    // Plain configuration repeats words found elsewhere (hostnames, project ids); only whole
    // values are checked for it.
    let plain = [
        "AWS_DEFAULT_REGION",
        "DOCKERHUB_USERNAME",
        "GOOGLE_PROJECT_ID",
        "DOCS_BASE_URL",
    ];
    let mut secrets: BTreeMap<String, String> = BTreeMap::new();
    for p in state.projects() {
        for (name, v) in &p.env_vars {
            if !plain.contains(&name.as_str()) {
                secrets.insert(format!("{} {name}", p.slug), v.value.clone());
            }
        }
        if let Some(pair) = &p.aws_keypair {
            secrets.insert(format!("{} legacy id", p.slug), pair.access_key_id.clone());
            secrets.insert(
                format!("{} legacy secret", p.slug),
                pair.secret_access_key.clone(),
            );
        }
        for k in &p.ssh_keys {
            secrets.insert(
                format!("{} ssh {}", p.slug, k.hostname),
                k.private_key.clone(),
            );
        }
    }
    for c in state.contexts() {
        for (name, v) in &c.vars {
            if !plain.contains(&name.as_str()) {
                secrets.insert(format!("context {} {name}", c.name), v.value.clone());
            }
        }
    }
    assert!(secrets.len() > 30);
    for value in state.stored_values() {
        if value.chars().count() > 4 {
            assert!(!json.contains(&value), "a whole value is in the inventory");
            assert!(!debug.contains(&value), "a whole value is in its Debug");
        }
    }
    for (place, value) in &secrets {
        let chars: Vec<char> = value.chars().collect();
        assert!(chars.len() > 8, "{place} is too short to test");
        // Five trailing characters would be one more than CircleCI shows. The mask itself
        // is taken out first: a value whose fifth-last character is `x` ends its own mask.
        let five: String = chars[chars.len() - 5..].iter().collect();
        let elsewhere = json.replace(&mask(value), "");
        assert!(
            !elsewhere.contains(&five),
            "more than four characters of {place}"
        );
    }
}

#[tokio::test]
async fn the_token_never_appears_in_output_or_errors() {
    let mut state = demo_org();
    state.add_project(ProjectSpec::new("gh/acme/locked").forbidden());
    let token = state.token().to_owned();
    let (sandbox, client) = start(state).await;
    let opts = LiveOptions {
        projects: vec!["gh/acme/ghost".into()],
        ..acme()
    };
    let inventory = take_live(&client, &opts).await.expect("inventory");
    assert_eq!(inventory.errors.len(), 2);
    let json = serde_json::to_string(&inventory).expect("json");
    assert!(!json.contains(&token));
    assert!(!format!("{client:?}").contains(&token));

    // Errors from the client itself: 404, 403 and 401, shown every way they can be.
    let mut shown = Vec::new();
    for slug in ["gh/acme/ghost", "gh/acme/locked"] {
        let e = client.list_project_env_vars(slug).await.expect_err("fails");
        shown.push(format!("{e} {e:?} {}", e.reason()));
    }
    let refused = CircleCiClient::new(&sandbox.base_url(), Secret::new(format!("{token}x")))
        .expect("client")
        .with_retry_policy(test_policy());
    let e = take_live(&refused, &acme()).await.expect_err("refused");
    assert!(matches!(e, LiveError::Unauthorized(_)));
    shown.push(format!("{e} {e:?}"));
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        shown.push(format!("{s} {s:?}"));
        source = s.source();
    }
    for text in &shown {
        assert!(!text.contains(&token), "token in: {text}");
    }
    assert!(
        shown
            .last()
            .is_some_and(|s| s.contains("You must log in first."))
    );
}

#[tokio::test]
async fn an_organization_id_reads_every_project_and_its_contexts_by_owner_id() {
    let mut state = demo_org().with_page_size(2);
    state.add_project(
        ProjectSpec::new("gh/acme/unfollowed")
            .env("UNFOLLOWED_TOKEN", "unfollowed-value-0001")
            .unfollowed(),
    );
    let org_id = state.org_id("gh/acme").expect("org").to_owned();
    let (sandbox, client) = start(state.clone()).await;

    // By slug the unfollowed project is not seen ...
    let by_slug = take_live(&client, &acme()).await.expect("inventory");
    assert_eq!(by_slug.projects.len(), 4);
    // ... by id it is.
    let opts = LiveOptions {
        org_id: Some(org_id.clone()),
        ..LiveOptions::default()
    };
    let by_id = take_live(&client, &opts).await.expect("inventory");
    assert!(by_id.errors.is_empty(), "{:?}", by_id.errors);
    assert_eq!(by_id.projects.len(), 5);
    assert_eq!(by_id.contexts.len(), 3);
    assert_matches_state(&by_id, &state);
    let log = sandbox.requests();
    assert_paged(&log, "/api/private/project", 3);
    assert!(
        on_path(&log, "/api/private/project")
            .iter()
            .all(|r| r.query_param("organization-id").as_deref() == Some(org_id.as_str()))
    );
    assert!(
        on_path(&log, "/api/v2/context")
            .iter()
            .any(|r| r.query_param("owner-id").as_deref() == Some(org_id.as_str()))
    );
}

#[tokio::test]
async fn concurrency_one_sends_one_request_at_a_time() {
    let state = demo_org();
    let (sandbox, client) = start(state).await;
    let latency = Duration::from_millis(20);
    sandbox.set_latency(latency);
    let opts = LiveOptions {
        concurrency: 1,
        ..acme()
    };
    let inventory = take_live(&client, &opts).await.expect("inventory");
    assert!(inventory.errors.is_empty());
    let log = sandbox.requests();
    // 2 listings + 4 projects x 3 reads + 3 contexts.
    assert_eq!(log.len(), 17);
    // Each answer takes `latency`; answers one after another are at least that far apart.
    for pair in log.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= latency,
            "overlapping requests: {pair:?}"
        );
    }
}

#[tokio::test]
async fn nothing_to_read_is_an_error() {
    let (_sandbox, client) = start(demo_org()).await;
    let e = take_live(&client, &LiveOptions::default())
        .await
        .expect_err("nothing to read");
    assert!(matches!(e, LiveError::NothingToRead));
}

#[tokio::test]
async fn a_refused_token_fails_the_run_even_for_named_projects_only() {
    let (sandbox, _client) = start(demo_org()).await;
    let refused = CircleCiClient::new(&sandbox.base_url(), Secret::new("not-the-token"))
        .expect("client")
        .with_retry_policy(test_policy());
    let opts = LiveOptions {
        projects: vec!["gh/acme/api".into(), "gh/acme/web".into()],
        ..LiveOptions::default()
    };
    let e = take_live(&refused, &opts).await.expect_err("refused");
    assert!(matches!(e, LiveError::Unauthorized(_)), "{e:?}");
    // 401 is an answer, not a fault: it is not retried.
    assert_eq!(sandbox.requests().len(), 6);
}
