//! Import of CircleCI-Env-Inspector output, current and older formats.

use chrono::Utc;
use rekey::inventory::{ErrorScope, InventorySource, env_inspector};

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
