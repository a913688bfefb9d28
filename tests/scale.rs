//! Organizations of every size (issue 10, section 5): a realistic inventory (values that differ
//! per project, tokens of many kinds) planned, decided mechanically, validated; and a plan split
//! for review (`rekey plan --split-by`) validated and applied as one run.

mod support;

use rekey::classify::synthetic::{decide_review_required, realistic_inventory};
use rekey::sandbox::aws::KeySpec;
use rekey::sandbox::circleci::ProjectSpec;
use std::path::Path;
use std::process::{Command, Output};
use support::world::{ACCOUNT_ID, PlanSpec, TARGET, World};

fn rekey(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(args)
        .env_remove("CIRCLECI_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .expect("run rekey")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write_inventory(dir: &Path, projects: usize, contexts: usize) -> String {
    let inv = realistic_inventory(projects, 30, contexts, 20);
    let path = dir.join("inventory.json");
    std::fs::write(&path, serde_json::to_vec(&inv).unwrap()).unwrap();
    path.display().to_string()
}

/// `rekey plan --split-by project` of `inventory` into the directory `split`.
fn split_by_project(inventory: &str, split: &Path) {
    let out = rekey(&[
        "plan",
        "--inventory",
        inventory,
        "--split-by",
        "project",
        "--out",
        split.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn scale_realistic_inventory_does_not_collapse_into_few_targets() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = write_inventory(dir.path(), 200, 10);
    let plan = dir.path().join("plan.yaml");
    let out = rekey(&[
        "plan",
        "--inventory",
        &inventory,
        "--out",
        plan.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let targets = summary["targets"].as_u64().unwrap();
    // About 19 targets per project (most values differ per project): the benchmark's 10,000
    // projects and 500 contexts make about 190,000.
    assert!((3_400..=4_400).contains(&targets), "{summary}");
    // Every REVIEW-REQUIRED decided, the plan validates (nothing the planner wrote blocks it).
    let decided = decide_review_required(&std::fs::read_to_string(&plan).unwrap());
    assert!(!decided.contains("REVIEW-REQUIRED: ") && !decided.contains(": REVIEW-REQUIRED"));
    std::fs::write(&plan, decided).unwrap();
    let out = rekey(&["validate", plan.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Split by project: a directory with an index, every target in exactly one file, and the
    // directory validates as the whole did.
    let split = dir.path().join("split");
    split_by_project(&inventory, &split);
    let index = std::fs::read_to_string(split.join("index.yaml")).unwrap();
    assert!(index.contains("kind: RotationPlanIndex"), "{index}");
    let mut ids = 0;
    for entry in std::fs::read_dir(&split).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().is_some_and(|n| n != "index.yaml") {
            let yaml = std::fs::read_to_string(&path).unwrap();
            ids += yaml.matches("\n  - id: ").count();
            std::fs::write(&path, decide_review_required(&yaml)).unwrap();
        }
    }
    assert_eq!(ids as u64, targets, "each target in one file");
    assert!(split.join("gh-acme-service-00007.yaml").exists());
    assert!(
        split.join("contexts.yaml").exists(),
        "context-only targets have a home"
    );
    let out = rekey(&["validate", split.to_str().unwrap(), "--output", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{report}");
    assert_eq!(report["targets"].as_u64(), Some(targets));
}

/// A binding copied into a second file of a split plan is refused where it was copied, naming
/// the file that already binds it.
#[test]
fn scale_a_binding_in_two_files_of_a_split_plan_is_a_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = write_inventory(dir.path(), 3, 0);
    let split = dir.path().join("split");
    split_by_project(&inventory, &split);
    let first = split.join("gh-acme-service-00000.yaml");
    let second = split.join("gh-acme-service-00001.yaml");
    let a = std::fs::read_to_string(&first).unwrap();
    let b = std::fs::read_to_string(&second).unwrap();
    // The second file's AWS key target now (also) binds project 0's variables.
    let aws = "- project: gh/acme/service-0000N\n      vars: {access_key_id: AWS_ACCESS_KEY_ID,";
    assert!(
        a.contains(&aws.replace('N', "0")),
        "fixture: project 0 has its own AWS key"
    );
    assert!(
        b.contains(&aws.replace('N', "1")),
        "fixture: project 1 has its own AWS key"
    );
    let b = b.replacen(&aws.replace('N', "1"), &aws.replace('N', "0"), 1);
    std::fs::write(&second, b).unwrap();
    let out = rekey(&["validate", split.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("gh-acme-service-00001.yaml:")
            && err.contains("is bound by target")
            && err.contains("gh-acme-service-00000.yaml (line"),
        "{err}"
    );
}

/// A plan split into two files (one per project group) is applied as one run: one run id,
/// one journal, both credentials rotated at the owner.
#[test]
fn scale_a_split_plan_is_applied_as_one_run() {
    let w = World::sandbox(1);
    let second = w.aws_second_user();
    let plan = w.plan_yaml(&PlanSpec::default());
    let plan = format!(
        "{plan}  - id: aws-ci-second\n    provider: aws-iam\n    principal: {{user: ci-second, account_id: \"{ACCOUNT_ID}\"}}\n    bindings:\n      - project: gh/acme/second\n        vars: {{access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}}\n"
    );
    let parsed = rekey::plan::load::parse("plan.yaml", &plan).unwrap();
    let dir = w.path("split");
    let parts = rekey::plan::split::split(
        parsed,
        rekey::plan::split::SplitBy::Project,
        &Default::default(),
    );
    assert_eq!(parts.len(), 2, "the shared target and gh/acme/second");
    rekey::plan::split::write_dir(
        &dir,
        rekey::plan::split::SplitBy::Project,
        &parts,
        &Default::default(),
    )
    .unwrap();
    let run = w.apply(&dir, &["--output", "json"]);
    run.expect_code(0, "apply of the split plan");
    let summary = run.summary();
    let states: Vec<&str> = summary["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["done", "done"], "{summary}");
    // One run, both targets in its journal.
    let status = w.status(None);
    assert_eq!(
        status["targets"].as_array().map(|t| t.len()),
        Some(2),
        "{status}"
    );
    // At the owner: each user holds only its new key, and it is the one CircleCI holds.
    let keys = w.sandbox_aws().keys_of("ci-second");
    assert_eq!(keys.len(), 1);
    assert_ne!(keys[0].access_key_id, second);
    assert_eq!(
        w.project_value("gh/acme/second", "AWS_ACCESS_KEY_ID")
            .as_deref(),
        Some(keys[0].access_key_id.as_str())
    );
    let first = w.sandbox_aws().keys_of(support::world::USER);
    assert_eq!(first.len(), 1);
    assert_ne!(first[0].access_key_id, w.old_key.0);
    let _ = TARGET;
}

trait SecondUser {
    /// `ci-second`, holding one key (made in 2022) bound in project gh/acme/second: its id.
    fn aws_second_user(&self) -> String;
}

impl SecondUser for World {
    fn aws_second_user(&self) -> String {
        let creds = self.sandbox_aws().with_state(|s| {
            s.add_user("ci-second", rekey::sandbox::aws::Access::None)
                .unwrap();
            s.add_key("ci-second", KeySpec::active()).unwrap()
        });
        self.circleci.with_state(|s| {
            s.add_project(
                ProjectSpec::new("gh/acme/second")
                    .env("AWS_ACCESS_KEY_ID", creds.access_key_id.clone())
                    .env(
                        "AWS_SECRET_ACCESS_KEY",
                        creds.secret_access_key.expose().to_owned(),
                    ),
            )
        });
        creds.access_key_id
    }
}
