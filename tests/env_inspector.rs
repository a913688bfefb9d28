//! Import of CircleCI-Env-Inspector output: the January 2023, February 2023 and March 2023 (today's)
//! formats, the README's example, and hostile input.

use chrono::Utc;
use rekey::inventory::env_inspector::Format;
use rekey::inventory::{ErrorScope, Inventory, InventoryError, InventorySource, env_inspector};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/env-inspector/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[test]
fn current_format() {
    let inv = env_inspector::import("current.json", &fixture("current.json"), Utc::now()).unwrap();
    assert_eq!(inv.source, InventorySource::EnvInspector);
    assert_eq!(inv.org.as_deref(), Some("gh/acme"));
    let slugs: Vec<&str> = inv.projects.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(slugs, ["gh/acme/api", "gh/acme/locked", "gh/acme/web"]);

    let api = &inv.projects[0];
    let names: Vec<&str> = api.env_vars.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "MYSTERY_CONFIG"
        ]
    );
    assert_eq!(api.env_vars[0].masked.as_str(), "xxxxWXYZ");
    assert_eq!(api.checkout_keys[0].key_type, "github-user-key");
    assert_eq!(api.ssh_keys[0].hostname, "deploy.acme.example");
    // The legacy key id came in full: only its last four survive the import.
    let legacy = api.legacy_aws_keys.as_ref().unwrap();
    assert_eq!(legacy.access_key_id.as_str(), "xxxxMPLE");
    assert_eq!(
        inv.projects[2].legacy_aws_keys, None,
        "null fields mean no legacy pair"
    );

    let ctx_names: Vec<&str> = inv.contexts.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(ctx_names, ["aws-prod", "github"]);
    assert_eq!(
        inv.contexts[0].variables[0].name, "AWS_ACCESS_KEY_ID",
        "sorted by name"
    );
    assert!(inv.contexts[0].variables[0].updated_at.is_some());

    assert_eq!(inv.errors.len(), 2);
    let project_error = inv
        .errors
        .iter()
        .find(|e| e.scope == ErrorScope::Project)
        .unwrap();
    assert_eq!(
        (project_error.name.as_str(), project_error.status),
        ("gh/acme/locked", Some(404))
    );
    assert_eq!(project_error.message, "Project not found");
    assert!(
        inv.errors
            .iter()
            .any(|e| e.scope == ErrorScope::Organization && e.message.contains("403"))
    );

    let json = serde_json::to_string(&inv).unwrap();
    assert!(
        !json.contains("AKIAIOSFODNN7EXAMPLE"),
        "a full key id must not survive the import"
    );
}

#[test]
fn older_format() {
    let inv = env_inspector::import("older.json", &fixture("older.json"), Utc::now()).unwrap();
    let slugs: Vec<&str> = inv.projects.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(
        slugs,
        ["bb/acme/web", "gh/acme/api"],
        "slug derived from the settings URL"
    );
    let api = &inv.projects[1];
    assert_eq!(api.env_vars.len(), 2);
    assert_eq!(
        api.checkout_keys[0].fingerprint,
        "SHA256:olderApiDeployKey00000000000000000000000000"
    );
    assert_eq!(
        api.legacy_aws_keys.as_ref().unwrap().access_key_id.as_str(),
        "xxxxABCD"
    );
    assert_eq!(inv.contexts[0].variables.len(), 2);
    assert!(inv.contexts[0].variables[0].updated_at.is_none());
}

#[test]
fn missing_required_field_names_the_json_path() {
    let err = env_inspector::import(
        "missing-field.json",
        &fixture("missing-field.json"),
        Utc::now(),
    )
    .unwrap_err();
    assert!(
        err.message.contains("accounts[0].contexts[0].variables[0]"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("missing field `variable`"),
        "{}",
        err.message
    );
    assert_eq!(err.line, 7);
    assert!(err.to_string().contains("missing-field.json:7:"));
}

#[test]
fn wrong_type_and_not_json_are_located_errors() {
    let text = r#"{"accounts": [{"name": "acme", "projects": [{"slug": 42}]}]}"#;
    let err = env_inspector::import("x.json", text, Utc::now()).unwrap_err();
    assert!(
        err.message.contains("accounts[0].projects[0].slug"),
        "{}",
        err.message
    );
    assert!(err.message.contains("invalid type"), "{}", err.message);
    assert_eq!(err.line, 1);

    let err = env_inspector::import("x.json", "{\"accounts\": [", Utc::now()).unwrap_err();
    assert_eq!(err.line, 1);
    let err = env_inspector::import("x.json", "{\"something\": 1}", Utc::now()).unwrap_err();
    assert!(err.message.contains("not CircleCI-Env-Inspector output"));
}

fn import(name: &str) -> Inventory {
    env_inspector::import(name, &fixture(name), Utc::now()).unwrap()
}

fn errors_of<'a>(inv: &'a Inventory, scope: ErrorScope, name: &str) -> Vec<&'a InventoryError> {
    inv.errors
        .iter()
        .filter(|e| e.scope == scope && e.name == name)
        .collect()
}

#[test]
fn formats_are_detected_from_content() {
    for (name, want) in [
        ("january-2023.json", Format::January2023),
        ("older.json", Format::January2023),
        ("february-2023.json", Format::February2023),
        ("march-2023.json", Format::March2023),
        ("current.json", Format::March2023),
    ] {
        assert_eq!(
            env_inspector::format_of(&fixture(name)),
            Some(want),
            "{name}"
        );
    }
    assert_eq!(env_inspector::format_of("{\"something\": 1}"), None);
    assert_eq!(env_inspector::format_of("not json"), None);
}

#[test]
fn january_2023_slugs_from_urls_and_placeholders_become_errors() {
    let inv = import("january-2023.json");
    assert_eq!(
        inv.org.as_deref(),
        Some("gh/acme"),
        "the VCS comes from the projects' URLs"
    );
    let slugs: Vec<&str> = inv.projects.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(slugs, ["bb/acme/docs", "gh/acme/api", "gh/acme/web"]);

    let api = &inv.projects[1];
    assert_eq!(api.env_vars.len(), 2);
    assert_eq!(api.env_vars[0].masked.as_str(), "xxxxWXYZ");
    assert_eq!(api.checkout_keys[0].key_type, "deploy-key");
    assert!(api.checkout_keys[0].preferred);

    // The placeholders are places not read, never a variable or a key.
    let web = &inv.projects[2];
    assert!(web.env_vars.is_empty(), "{:?}", web.env_vars);
    assert!(web.checkout_keys.is_empty(), "{:?}", web.checkout_keys);
    let web_errors = errors_of(&inv, ErrorScope::Project, "gh/acme/web");
    assert_eq!(web_errors.len(), 2, "{web_errors:?}");
    assert!(
        web_errors
            .iter()
            .any(|e| e.message.contains("Unable to fetch variables")
                && e.message.contains("status code 404"))
    );
    assert!(
        web_errors
            .iter()
            .any(|e| e.message.contains("Unable to fetch keys"))
    );

    let locked = inv
        .contexts
        .iter()
        .find(|c| c.name == "locked-context")
        .unwrap();
    assert!(locked.variables.is_empty());
    let ctx_errors = errors_of(&inv, ErrorScope::Context, "locked-context");
    assert_eq!(ctx_errors.len(), 1);
    assert!(ctx_errors[0].message.contains("403"));

    assert_eq!(
        errors_of(&inv, ErrorScope::Project, "acme/archived").len(),
        1,
        "unavailable"
    );
    let names: Vec<&str> = inv
        .projects
        .iter()
        .flat_map(|p| p.env_vars.iter().map(|v| v.name.as_str()))
        .chain(
            inv.contexts
                .iter()
                .flat_map(|c| c.variables.iter().map(|v| v.name.as_str())),
        )
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("ERROR")), "{names:?}");
}

#[test]
fn february_2023_keys_and_legacy_pair() {
    let inv = import("february-2023.json");
    assert_eq!(inv.org.as_deref(), Some("gh/acme"));
    let api = inv
        .projects
        .iter()
        .find(|p| p.slug == "gh/acme/api")
        .unwrap();
    assert_eq!(api.env_vars.len(), 2);
    assert_eq!(
        api.checkout_keys[0].fingerprint,
        "SHA256:febApiDeployKey0000000000000000000000000000"
    );
    let legacy = api.legacy_aws_keys.as_ref().unwrap();
    assert_eq!(legacy.access_key_id.as_str(), "xxxxLGCY");
    assert_eq!(legacy.secret_access_key.as_str(), "xxxxSECR");
    let web_errors = errors_of(&inv, ErrorScope::Project, "gh/acme/web");
    assert_eq!(web_errors.len(), 1);
    assert_eq!(
        web_errors[0].status,
        Some(500),
        "status read inside `error`"
    );
    assert!(web_errors[0].message.contains("status code 500"));
    let ctx = &inv.contexts[0];
    assert_eq!(ctx.variables[0].name, "AWS_ACCESS_KEY_ID");
    assert!(ctx.variables[0].updated_at.is_some());
    let json = serde_json::to_string(&inv).unwrap();
    assert!(
        !json.contains("AKIAFEBEXAMPLE00LGCY"),
        "only the last four survive"
    );
}

#[test]
fn march_2023_empty_legacy_pair_is_no_pair_and_errors_are_located() {
    let inv = import("march-2023.json");
    let api = inv
        .projects
        .iter()
        .find(|p| p.slug == "gh/acme/api")
        .unwrap();
    assert_eq!(api.ssh_keys[0].hostname, "deploy.acme.example");
    assert_eq!(
        api.legacy_aws_keys.as_ref().unwrap().access_key_id.as_str(),
        "xxxxLGCY"
    );
    let flaky = inv
        .projects
        .iter()
        .find(|p| p.slug == "gh/acme/flaky")
        .unwrap();
    assert_eq!(
        flaky.legacy_aws_keys, None,
        "empty strings are an API error, not a key pair"
    );
    let flaky_errors = errors_of(&inv, ErrorScope::Project, "gh/acme/flaky");
    assert_eq!(flaky_errors.len(), 1);
    assert_eq!(flaky_errors[0].status, Some(502));
    let ctx_errors = errors_of(&inv, ErrorScope::Context, "locked-context");
    assert_eq!((ctx_errors.len(), ctx_errors[0].status), (1, Some(403)));
}

#[test]
fn the_three_formats_agree_on_what_they_share() {
    // The same project written by each generation of the tool reads the same.
    let shapes: Vec<Inventory> = ["january-2023.json", "february-2023.json", "march-2023.json"]
        .into_iter()
        .map(import)
        .collect();
    for inv in &shapes {
        let api = inv
            .projects
            .iter()
            .find(|p| p.slug == "gh/acme/api")
            .unwrap();
        assert_eq!(api.env_vars[0].name, "AWS_ACCESS_KEY_ID");
        assert_eq!(api.env_vars[0].masked.as_str(), "xxxxWXYZ");
        assert_eq!(api.checkout_keys.len(), 1);
        assert_eq!(
            inv.contexts
                .iter()
                .find(|c| c.name == "aws-prod")
                .unwrap()
                .id,
            "7f6e0c2a-1b2c-4d5e-8f90-0a1b2c3d4e5f"
        );
    }
}

#[test]
fn hostile_input_is_located_and_never_quotes_values() {
    // A January file whose project has neither slug nor usable URL.
    let text = r#"[{"acme": {"contexts": [], "projects": [{"name": "acme/x", "url": "https://example.com/nope", "variables": []}]}}]"#;
    let err = env_inspector::import("jan.json", text, Utc::now()).unwrap_err();
    assert!(
        err.message.contains("[0].acme.projects[0]"),
        "{}",
        err.message
    );
    // A value of the wrong type: the path is named, the value is not quoted.
    let text = r#"[{"acme": {"projects": [{"url": "https://app.circleci.com/settings/project/github/acme/x", "variables": [{"name": "K", "value": 1}], "project_keys": [{"type": "deploy-key", "fingerprint": "f", "preferred": true}]}]}}]"#;
    assert!(env_inspector::import("jan.json", text, Utc::now()).is_err());
    let text = r#"{"accounts": [{"name": "acme", "projects": [{"slug": "gh/acme/x", "project_env_vars": [{"name": "K", "value": ["AKIASECRETVALUE12345"]}]}]}]}"#;
    let err = env_inspector::import("mar.json", text, Utc::now()).unwrap_err();
    assert!(
        err.message
            .contains("accounts[0].projects[0].variables[0].value")
            || err
                .message
                .contains("accounts[0].projects[0].project_env_vars[0].value"),
        "{}",
        err.message
    );
    assert!(!err.to_string().contains("AKIASECRETVALUE12345"), "{err}");
    // Truncated, and an array of something else.
    let err =
        env_inspector::import("x.json", "[{\"acme\": {\"projects\": [", Utc::now()).unwrap_err();
    assert_eq!(err.line, 1);
    let err = env_inspector::import("x.json", "[1, 2]", Utc::now()).unwrap_err();
    assert!(err.message.contains("[0]"), "{}", err.message);
}
