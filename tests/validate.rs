//! `rekey validate`: broken plans, each rejected with its message at the right line and column.

use rekey::diagnostic::Diagnostic;
use rekey::plan::{load, validate};

/// A small valid plan; each case edits it. Line numbers are in the comments.
const BASE: &str = "\
apiVersion: rekey/v1
kind: RotationPlan
metadata:
  name: t
hunts:
  pre: [aws-recon]
  post: [old-credential-used]
targets:
  - id: aws-a
    provider: aws-iam
    principal: {user: ci}
    bindings:
      - project: gh/acme/api
        vars: {access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}
";

/// BASE with line `n` (1-based) replaced by `text` (which may span several lines).
fn replace(n: usize, text: &str) -> String {
    let mut lines: Vec<&str> = BASE.lines().collect();
    lines[n - 1] = text;
    lines.join("\n") + "\n"
}

/// BASE with `extra` appended.
fn append(extra: &str) -> String {
    format!("{BASE}{extra}")
}

/// All diagnostics of a plan text: the parse error, or the validation results.
fn check(text: &str) -> Vec<Diagnostic> {
    match load::parse("plan.yaml", text) {
        Err(d) => vec![d],
        Ok(plan) => validate::validate("plan.yaml", text, &plan),
    }
}

/// Asserts exactly one error, containing `needle`, at `line:column`, quoting that line.
fn assert_one_error(text: &str, needle: &str, line: u32, column: u32) {
    let diags = check(text);
    let errors: Vec<&Diagnostic> = diags.iter().filter(|d| d.is_error()).collect();
    assert_eq!(errors.len(), 1, "expected one error, got {diags:#?}");
    let e = errors[0];
    assert!(
        e.message.contains(needle),
        "message {:?} lacks {needle:?}",
        e.message
    );
    assert_eq!(
        (e.line, e.column),
        (line, column),
        "position of {:?}",
        e.message
    );
    let quoted = text.lines().nth(line as usize - 1).unwrap();
    assert_eq!(e.source_line, quoted);
    let rendered = e.to_string();
    assert!(
        rendered.contains(&format!("plan.yaml:{line}:{column}")),
        "{rendered}"
    );
    assert!(rendered.contains(quoted), "{rendered}");
}

#[test]
fn base_plan_is_valid() {
    assert!(check(BASE).is_empty(), "{:#?}", check(BASE));
}

#[test]
fn unknown_field() {
    assert_one_error(
        &replace(11, "    principle: {user: ci}"),
        "unknown field `principle`",
        11,
        5,
    );
}

#[test]
fn wrong_type() {
    assert_one_error(
        &replace(13, "      - project: [gh/acme/api]"),
        "expected string",
        13,
        18,
    );
}

#[test]
fn unknown_provider() {
    assert_one_error(
        &replace(10, "    provider: aws"),
        "unknown variant `aws`",
        10,
        15,
    );
}

#[test]
fn duration_that_does_not_parse() {
    let text = append("defaults:\n  grace: 24x\n");
    assert_one_error(&text, "invalid duration \"24x\"", 16, 10);
}

#[test]
fn timestamp_that_does_not_parse() {
    let text = append("incident:\n  since: 2022-13-45T00:00:00Z\n");
    assert_one_error(&text, "input is out of range", 16, 10);
}

#[test]
fn duplicate_target_id() {
    let text = append(
        "  - id: aws-a\n    provider: aws-iam\n    principal: {user: ci2}\n    bindings:\n      - project: gh/acme/web\n        vars: {access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}\n",
    );
    assert_one_error(
        &text,
        "duplicate target id `aws-a` (first defined at line 9)",
        15,
        9,
    );
}

#[test]
fn variable_bound_by_two_targets() {
    let text = append(
        "  - id: aws-b\n    provider: aws-iam\n    principal: {user: ci2}\n    bindings:\n      - project: gh/acme/api\n        vars: {access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: OTHER_SECRET}\n",
    );
    assert_one_error(
        &text,
        "project gh/acme/api variable AWS_ACCESS_KEY_ID is bound by target `aws-a` (line 14)",
        20,
        31,
    );
}

#[test]
fn missing_provider_specific_field() {
    assert_one_error(
        &replace(11, "    principal: {account_id: \"123\"}"),
        "provider aws-iam needs `principal.user`",
        10,
        15,
    );
}

#[test]
fn binding_without_a_required_credential_field() {
    assert_one_error(
        &replace(14, "        vars: {access_key_id: AWS_ACCESS_KEY_ID}"),
        "does not map required field `secret_access_key`",
        13,
        18,
    );
}

#[test]
fn field_the_provider_does_not_have() {
    assert_one_error(
        &replace(
            14,
            "        vars: {access_key_id: A, secret_access_key: B, region: AWS_REGION}",
        ),
        "has no field `region`",
        14,
        56,
    );
}

#[test]
fn unknown_hunt() {
    assert_one_error(
        &replace(6, "  pre: [aws-recon, aws-rekon]"),
        "unknown hunt `aws-rekon`",
        6,
        20,
    );
}

#[test]
fn review_required_left_in() {
    assert_one_error(
        &replace(11, "    principal: {user: REVIEW-REQUIRED}"),
        "principal.user needs a reviewer's decision",
        11,
        23,
    );
}

#[test]
fn cidr_that_does_not_parse() {
    assert_one_error(
        &append("allow_cidrs: [10.0.0.0/33]\n"),
        "prefix length 33 is larger than 32",
        15,
        15,
    );
}

#[test]
fn binding_with_both_project_and_context() {
    let text = replace(
        13,
        "      - project: gh/acme/api\n        context: aws-prod",
    );
    assert_one_error(&text, "names exactly one of `project` or `context`", 13, 18);
}

#[test]
fn wrong_api_version() {
    assert_one_error(
        &replace(1, "apiVersion: rekey/v2"),
        "unsupported apiVersion `rekey/v2`",
        1,
        13,
    );
}

#[test]
fn duplicate_yaml_key() {
    let diags = check(&replace(10, "    provider: aws-iam\n    provider: exec"));
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(
        diags[0].message.to_lowercase().contains("duplicate"),
        "{:?}",
        diags[0].message
    );
    assert_eq!(diags[0].line, 11);
}

#[test]
fn exec_target_without_commands() {
    let text = append(
        "  - id: npm\n    provider: exec\n    bindings:\n      - project: gh/acme/web\n        vars: {value: NPM_TOKEN}\n",
    );
    assert_one_error(&text, "provider exec needs an `exec` block", 16, 15);
}

#[test]
fn invalid_yaml_syntax() {
    let diags = check(&replace(12, "    bindings: [unclosed"));
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(diags[0].line >= 12, "{:?}", diags[0]);
}

#[test]
fn unconfirmed_grouping_is_a_warning_not_an_error() {
    let diags = check(&replace(10, "    provider: aws-iam\n    confirmed: false"));
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(!diags[0].is_error());
    assert!(diags[0].message.contains("confirmed: true"));
}

#[test]
fn example_plans_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/plans")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let diags = check(&text);
            let errors: Vec<_> = diags.iter().filter(|d| d.is_error()).collect();
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        }
    }
}

#[test]
fn many_errors_are_all_reported_at_once() {
    let text =
        replace(11, "    principal: {user: REVIEW-REQUIRED}").replace("[aws-recon]", "[nope]");
    let errors = check(&text).into_iter().filter(|d| d.is_error()).count();
    assert_eq!(errors, 2);
}

#[test]
fn legacy_key_pair_cannot_be_applied() {
    let text = replace(
        14,
        "        vars: {access_key_id: LEGACY_AWS_ACCESS_KEY_ID, secret_access_key: LEGACY_AWS_SECRET_ACCESS_KEY}",
    );
    assert_one_error(&text, "legacy AWS key pair of project settings", 14, 31);
}

#[test]
fn two_targets_of_one_iam_user_are_refused() {
    let text = append(
        "  - id: aws-b\n    provider: aws-iam\n    principal: {user: ci}\n    bindings:\n      - project: gh/acme/web\n        vars: {access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}\n",
    );
    let diags = check(&text);
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert!(diags[0].is_error());
    assert!(
        diags[0]
            .message
            .contains("both rotate aws-iam credentials of user ci"),
        "{}",
        diags[0].message
    );
    assert_eq!((diags[0].line, diags[0].column), (17, 23));
}

#[test]
fn hunt_source_that_cannot_hold_that_source() {
    // Line 7: S3 holds CloudTrail log files only.
    assert_one_error(
        &replace(
            7,
            "  post: [old-credential-used]\n  sources: {gcp_logging: [s3://bucket/x]}",
        ),
        "S3 holds only CloudTrail log files",
        8,
        27,
    );
    assert_one_error(
        &replace(
            7,
            "  post: [old-credential-used]\n  sources: {cloudtrail: [org:acme]}",
        ),
        "`org:` names a GitHub organization",
        8,
        26,
    );
}

#[test]
fn delivery_delay_of_an_unknown_source() {
    assert_one_error(
        &replace(
            7,
            "  post: [old-credential-used]\n  delivery_delay: {cloudtrial: 15m}",
        ),
        "unknown source `cloudtrial`",
        8,
        32,
    );
}

#[test]
fn hunt_in_the_wrong_phase_is_a_warning() {
    let diags = check(&replace(6, "  pre: [old-credential-used]"));
    assert!(diags.iter().all(|d| !d.is_error()), "{diags:#?}");
    assert!(
        diags
            .iter()
            .any(|d| d.message.contains("meant for the post phase") && d.line == 6),
        "{diags:#?}"
    );
}
