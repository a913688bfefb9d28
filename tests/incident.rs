//! Incident versus schedule (DESIGN.md; issue 10, section 3), through the binary against the
//! CircleCI and AWS sandboxes: the key CircleCI holds was created in 2022.
//!
//! - An incident open since 2020 rotates it although `max_age` (10000d) says it is young.
//! - An incident that ended (`until`) before the key was created does not: then `max_age`
//!   alone decides, both ways.
//!
//! The dry run and the report say, per target, why it is due or skipped.

mod support;

use support::world::{PlanSpec, World};

fn spec(max_age: &str, incident: &str) -> PlanSpec {
    PlanSpec {
        max_age: Some(max_age.into()),
        sections: format!("incident: {incident}\n"),
        ..PlanSpec::default()
    }
}

fn dry_run(w: &World, plan: &std::path::Path) -> serde_json::Value {
    let state = w.state_dir().display().to_string();
    let plan = plan.display().to_string();
    let out = w.run(
        &[
            "apply",
            &plan,
            "--dry-run",
            "--state-dir",
            &state,
            "--output",
            "json",
        ],
        &[],
    );
    out.expect_code(0, "dry run");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

#[test]
fn incident_rotates_a_credential_younger_than_max_age() {
    let w = World::sandbox(1);
    let plan = w.write_plan(&spec("10000d", "{since: 2020-01-01T00:00:00Z}"));
    let preview = dry_run(&w, &plan);
    let target = &preview["targets"][0];
    assert_eq!(target["action"]["kind"], "rotate", "{preview}");
    let due = target["due"].as_str().unwrap_or_default();
    assert!(
        due.contains("incident") && due.contains("open"),
        "{preview}"
    );

    let report = w.path("report.md");
    let run = w.apply(
        &plan,
        &["--output", "json", "--report", report.to_str().unwrap()],
    );
    run.expect_code(0, "apply");
    assert_eq!(run.summary()["targets"][0]["state"], "done");
    assert!(
        run.summary()["targets"][0]["due"]
            .as_str()
            .is_some_and(|d| d.contains("incident")),
        "{}",
        run.summary()
    );
    let markdown = std::fs::read_to_string(&report).unwrap();
    assert!(
        markdown.contains("Due because") && markdown.contains("incident: "),
        "{markdown}"
    );
    w.assert_rotated(&run.run_id(), 1, &[]);

    // Applied again while the incident is still open: rekey's own key is the remedy, not
    // exposed, so nothing rotates a second time.
    let again = w.apply(&plan, &["--output", "json"]);
    again.expect_code(0, "second apply");
    let reason = again.summary()["targets"][0]["reason"].clone();
    assert_eq!(
        again.summary()["targets"][0]["state"],
        "skipped",
        "{reason}"
    );
    assert!(
        reason
            .as_str()
            .is_some_and(|r| r.contains("younger than max_age")),
        "{reason}"
    );
}

#[test]
fn incident_that_ended_before_the_key_leaves_max_age_to_decide() {
    let ended = "{since: 2020-01-01T00:00:00Z, until: 2021-01-01T00:00:00Z}";
    // Young by max_age, created after the incident: skipped, saying both.
    let w = World::sandbox(1);
    let plan = w.write_plan(&spec("10000d", ended));
    let preview = dry_run(&w, &plan);
    let action = &preview["targets"][0]["action"];
    assert_eq!(action["kind"], "skip", "{preview}");
    let why = action["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("younger than max_age") && why.contains("after the incident ended"),
        "{why}"
    );
    let run = w.apply(&plan, &["--output", "json"]);
    run.expect_code(0, "apply");
    assert_eq!(run.summary()["targets"][0]["state"], "skipped");
    w.assert_untouched("an incident that ended before the key was made");

    // Old by max_age: the schedule says due, whatever the incident.
    let plan = w.write_plan(&spec("30d", ended));
    let preview = dry_run(&w, &plan);
    let target = &preview["targets"][0];
    assert_eq!(target["action"]["kind"], "rotate", "{preview}");
    assert!(
        target["due"]
            .as_str()
            .is_some_and(|d| d.contains("older than max_age 30d")),
        "{preview}"
    );
}

/// `rekey plan` writes an incident plan (open: no `until`); `--schedule` writes one without
/// an incident, where only max_age makes a credential due.
#[test]
fn incident_plan_by_default_and_schedule_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plans/example-inventory.json")
        .display()
        .to_string();
    let write = |extra: &[&str]| {
        let out = dir.path().join("plan.yaml");
        let mut args = vec!["plan", "--inventory", &inventory, "--out"];
        let out_str = out.display().to_string();
        args.push(&out_str);
        args.extend_from_slice(extra);
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_rekey"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let yaml = std::fs::read_to_string(&out).unwrap();
        rekey::plan::load::parse("plan.yaml", &yaml).unwrap()
    };
    let incident = write(&[]).incident.expect("an incident plan");
    assert!(
        incident.until.is_none(),
        "open until the reviewer says when it ended"
    );
    let scheduled = write(&["--schedule"]);
    assert!(scheduled.incident.is_none());
    assert!(scheduled.defaults.max_age.is_some());
}
