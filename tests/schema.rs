//! The committed JSON Schema must be what the Rust types generate. When this fails, run
//! `cargo run -- schema > plans/rekey-plan.schema.json` and commit the result.

#[test]
fn committed_schema_is_up_to_date() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/rekey-plan.schema.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = rekey::plan::schema_json() + "\n";
    if std::env::var_os("REKEY_UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &generated).unwrap();
        return;
    }
    assert!(
        committed == generated,
        "plans/rekey-plan.schema.json is out of date: run `REKEY_UPDATE_SCHEMA=1 cargo test --test schema` and commit it"
    );
}

#[test]
fn schema_describes_the_plan() {
    let schema: serde_json::Value = serde_json::from_str(&rekey::plan::schema_json()).unwrap();
    let props = &schema["properties"];
    for key in [
        "apiVersion",
        "kind",
        "metadata",
        "incident",
        "defaults",
        "hunts",
        "targets",
        "unclassified",
        "errors",
    ] {
        assert!(props.get(key).is_some(), "schema lacks {key}");
    }
    assert_eq!(
        schema["additionalProperties"],
        serde_json::json!(false),
        "unknown fields are rejected"
    );
    let providers = serde_json::to_string(&schema["$defs"]["ProviderKind"]).unwrap();
    for p in [
        "aws-iam",
        "github-deploy-key",
        "circleci-checkout-key",
        "github-token",
        "gcp-sa-key",
        "azure-app-secret",
        "exec",
    ] {
        assert!(providers.contains(p), "schema lacks provider {p}");
    }
}
