//! The journal: runs, events, target states, schema versioning, file modes, and that a process
//! SIGKILLed while recording leaves a consistent journal holding every record that returned.
//!
//! Child processes re-run this test binary with `REKEY_TEST_HELPER` naming what to do (see
//! [`child_process_helper`]), so no helper binary is needed.

use rekey::engine::journal::{Journal, JournalError, Phase, RunId, RunStatus, SCHEMA_VERSION};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const PLAN: &str = "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: test}\n";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn creates_and_lists_runs() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(&dir.path().join("state")).unwrap();
    assert!(journal.runs().unwrap().is_empty());

    let first = journal
        .create_run("incident", "plans/incident.yaml", PLAN)
        .unwrap();
    let second = journal
        .create_run("other", "plans/other.yaml", "kind: other\n")
        .unwrap();
    assert_ne!(first, second);
    // r + YYYYMMDD-HHMMSS + 4 hex digits, and a person can type it back.
    assert_eq!(RunId::parse(first.as_str()).unwrap(), first);

    let record = journal.run(&first).unwrap().unwrap();
    assert_eq!(record.plan_name, "incident");
    assert_eq!(record.plan_file, "plans/incident.yaml");
    assert_eq!(record.plan_text, PLAN);
    assert_eq!(
        record.plan_sha256,
        hex::encode(Sha256::digest(PLAN.as_bytes()))
    );
    assert_eq!(record.status, RunStatus::Running);
    assert!(
        journal
            .run(&RunId::from("r20000101-000000-0000".to_string()))
            .unwrap()
            .is_none()
    );

    let runs = journal.runs().unwrap();
    let ids: Vec<_> = runs.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, vec![second.clone(), first.clone()], "newest first");

    journal.set_run_status(&first, RunStatus::Waiting).unwrap();
    let record = journal.run(&first).unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Waiting);
    assert!(record.updated_at >= record.created_at);
    let unknown = RunId::from("r20000101-000000-0000".to_string());
    assert!(matches!(
        journal.set_run_status(&unknown, RunStatus::Complete),
        Err(JournalError::UnknownRun(_))
    ));

    // The same plan text continues its newest unfinished run; a finished one is not continued.
    assert_eq!(
        journal.unfinished_run_for(PLAN).unwrap(),
        Some(first.clone())
    );
    let third = journal
        .create_run("incident", "plans/incident.yaml", PLAN)
        .unwrap();
    assert_eq!(
        journal.unfinished_run_for(PLAN).unwrap(),
        Some(third.clone())
    );
    journal.set_run_status(&third, RunStatus::Complete).unwrap();
    assert_eq!(
        journal.unfinished_run_for(PLAN).unwrap(),
        Some(first.clone())
    );
    journal.set_run_status(&first, RunStatus::Failed).unwrap();
    assert_eq!(journal.unfinished_run_for(PLAN).unwrap(), None);
    assert_eq!(journal.unfinished_run_for("another plan").unwrap(), None);

    // Everything is still there for a new process.
    drop(journal);
    let journal = Journal::open(&dir.path().join("state")).unwrap();
    assert_eq!(journal.runs().unwrap().len(), 3);
}

#[test]
fn events_come_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let run = journal.create_run("p", "p.yaml", PLAN).unwrap();
    let other = journal.create_run("p", "p.yaml", PLAN).unwrap();

    let steps = [
        ("aws-a", "mint", Phase::Intent, json!({})),
        (
            "aws-b",
            "inspect",
            Phase::Done,
            json!({"keys": ["AKIA1", "AKIA2"]}),
        ),
        ("aws-a", "mint", Phase::Done, json!({"new_id": "AKIANEW"})),
        (
            "aws-b",
            "capacity",
            Phase::Skipped,
            json!({"message": "room"}),
        ),
        (
            "aws-a",
            "verify-new",
            Phase::Failed,
            json!({"message": "rejected", "attempt": 3}),
        ),
    ];
    let mut seqs = Vec::new();
    for (i, (target, step, phase, detail)) in steps.iter().enumerate() {
        seqs.push(journal.record(&run, target, step, *phase, detail).unwrap());
        // Another run's events interleave and must not leak into this run's.
        journal
            .record(&other, target, "noise", Phase::Done, &json!({"i": i}))
            .unwrap();
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let all = journal.events(&run, None).unwrap();
    assert_eq!(all.len(), steps.len());
    for (event, ((target, step, phase, detail), seq)) in all.iter().zip(steps.iter().zip(&seqs)) {
        assert_eq!(event.seq, *seq);
        assert_eq!(&event.run, &run);
        assert_eq!(event.target, *target);
        assert_eq!(event.step, *step);
        assert_eq!(event.phase, *phase);
        assert_eq!(&event.detail, detail);
    }
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));

    let a: Vec<_> = journal
        .events(&run, Some("aws-a"))
        .unwrap()
        .into_iter()
        .map(|e| (e.step, e.phase))
        .collect();
    assert_eq!(
        a,
        vec![
            ("mint".to_string(), Phase::Intent),
            ("mint".to_string(), Phase::Done),
            ("verify-new".to_string(), Phase::Failed),
        ]
    );
    let last = journal.last(&run, "aws-b").unwrap().unwrap();
    assert_eq!(
        (last.step.as_str(), last.phase),
        ("capacity", Phase::Skipped)
    );
    assert!(journal.last(&run, "nobody").unwrap().is_none());
    assert!(journal.events(&run, Some("nobody")).unwrap().is_empty());

    let unknown = RunId::from("r20000101-000000-0000".to_string());
    assert!(matches!(
        journal.record(&unknown, "t", "mint", Phase::Intent, &json!({})),
        Err(JournalError::UnknownRun(_))
    ));
}

#[test]
fn target_states_are_cheap_to_read() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let run = journal.create_run("p", "p.yaml", PLAN).unwrap();
    assert!(journal.target_states(&run).unwrap().is_empty());

    let until = chrono::Utc::now() + chrono::Duration::hours(24);
    journal
        .set_target_state(&run, "b", "rotating", None, None)
        .unwrap();
    journal
        .set_target_state(&run, "a", "done", None, Some("rotated"))
        .unwrap();
    journal
        .set_target_state(&run, "c", "rotating", None, None)
        .unwrap();
    journal
        .set_target_state(
            &run,
            "c",
            "waiting",
            Some(until),
            Some("grace until tomorrow"),
        )
        .unwrap();

    let states = journal.target_states(&run).unwrap();
    let names: Vec<_> = states
        .iter()
        .map(|s| (s.target.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        names,
        vec![("a", "done"), ("b", "rotating"), ("c", "waiting")]
    );
    assert_eq!(states[0].message.as_deref(), Some("rotated"));
    assert_eq!(states[1].waiting_until, None);
    assert_eq!(
        states[2].waiting_until.map(|t| t.timestamp_millis()),
        Some(until.timestamp_millis())
    );
    assert_eq!(states[2].message.as_deref(), Some("grace until tomorrow"));

    // Replacing a state clears what the new one does not say.
    journal
        .set_target_state(&run, "c", "done", None, None)
        .unwrap();
    let c = journal.target_states(&run).unwrap().pop().unwrap();
    assert_eq!(
        (c.state.as_str(), c.waiting_until, c.message),
        ("done", None, None)
    );

    let summary = journal.runs().unwrap().pop().unwrap();
    assert_eq!(summary.targets.get("done"), Some(&2));
    assert_eq!(summary.targets.get("rotating"), Some(&1));

    let unknown = RunId::from("r20000101-000000-0000".to_string());
    assert!(matches!(
        journal.set_target_state(&unknown, "a", "done", None, None),
        Err(JournalError::UnknownRun(_))
    ));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let path = journal.path().to_path_buf();
    drop(journal);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION.to_string());
    conn.execute(
        "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
        [],
    )
    .unwrap();
    drop(conn);

    let err = Journal::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, JournalError::NewerSchema { found: 99, supported, .. } if supported == SCHEMA_VERSION),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains("newer rekey"), "{message}");
}

#[test]
fn a_foreign_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    drop(conn);
    let err = Journal::open(dir.path()).unwrap_err();
    assert!(matches!(err, JournalError::NotAJournal { .. }), "{err:?}");
}

#[test]
fn files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("nested").join(".rekey");
    let journal = Journal::open(&state).unwrap();
    let run = journal.create_run("p", "p.yaml", PLAN).unwrap();
    journal
        .record(&run, "t", "mint", Phase::Intent, &json!({}))
        .unwrap();

    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(journal.path()), 0o600);
    let mut seen = 0;
    for suffix in ["-wal", "-shm"] {
        let path = state.join(format!("journal.sqlite{suffix}"));
        if path.exists() {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "WAL mode keeps a -wal and a -shm file");
    drop(journal);

    // A database someone loosened is tightened again on open.
    std::fs::set_permissions(
        state.join("journal.sqlite"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let journal = Journal::open(&state).unwrap();
    assert_eq!(mode(journal.path()), 0o600);
}

#[test]
fn scan_for_sees_what_reached_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let run = journal.create_run("p", "p.yaml", PLAN).unwrap();
    journal
        .record(
            &run,
            "t",
            "inspect",
            Phase::Done,
            &json!({"note": "needle-5c1e"}),
        )
        .unwrap();
    assert!(journal.scan_for("needle-5c1e").unwrap());
    assert!(
        journal.scan_for(b"apiVersion: rekey/v1").unwrap(),
        "the plan text is stored"
    );
    assert!(!journal.scan_for("never-written-4b7f").unwrap());
}

/// How many records the child must have reported before it is killed.
const RECORDS_BEFORE_KILL: usize = 150;

#[test]
fn a_sigkill_leaves_every_returned_record() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path()).unwrap();
    let run = journal.create_run("p", "p.yaml", PLAN).unwrap();
    drop(journal);

    let mut child = helper("journal-writer")
        .env("REKEY_TEST_DIR", dir.path())
        .env("REKEY_TEST_RUN", run.as_str())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut returned: Vec<(i64, u64)> = Vec::new();
    while returned.len() < RECORDS_BEFORE_KILL {
        let line = lines
            .next()
            .expect("the writer ended before it was killed")
            .unwrap();
        if let Some(rest) = line.strip_prefix("RECORDED ") {
            let (seq, i) = rest.split_once(' ').unwrap();
            returned.push((seq.parse().unwrap(), i.parse().unwrap()));
        }
    }
    // SIGKILL, mid-write more often than not: the writer records in a tight loop.
    child.kill().unwrap();
    child.wait().unwrap();
    // Records that returned before the kill but were still in the pipe count too.
    for line in lines.map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("RECORDED ")
            && let Some((seq, i)) = rest.split_once(' ')
        {
            returned.push((seq.parse().unwrap(), i.parse().unwrap()));
        }
    }

    let conn = rusqlite::Connection::open(dir.path().join("journal.sqlite")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);

    let journal = Journal::open(dir.path()).unwrap();
    let events = journal.events(&run, Some("target")).unwrap();
    // Every record that returned is there; at most one more (committed, not yet reported).
    assert!(
        events.len() >= returned.len(),
        "{} < {}",
        events.len(),
        returned.len()
    );
    assert!(events.len() <= returned.len() + 1);
    for (n, event) in events.iter().enumerate() {
        assert_eq!(
            event.detail["i"],
            json!(n),
            "records are whole and in order"
        );
        assert_eq!(event.step, "step");
    }
    for (seq, i) in returned {
        let event = &events[usize::try_from(i).unwrap()];
        assert_eq!(event.seq, seq);
    }
    // The journal still takes records after the crash.
    journal
        .record(&run, "target", "after", Phase::Done, &json!({}))
        .unwrap();
}

fn helper(mode: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_process_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("REKEY_TEST_HELPER", mode);
    command
}

/// Not a test: what a child process does when this binary is re-run with `REKEY_TEST_HELPER`.
#[test]
fn child_process_helper() {
    let Ok(mode) = std::env::var("REKEY_TEST_HELPER") else {
        return;
    };
    match mode.as_str() {
        "journal-writer" => {
            let dir = std::env::var("REKEY_TEST_DIR").unwrap();
            let run = RunId::from(std::env::var("REKEY_TEST_RUN").unwrap());
            let journal = Journal::open(Path::new(&dir)).unwrap();
            let mut out = std::io::stdout().lock();
            // The harness has printed `test child_process_helper ... ` without a newline.
            writeln!(out).unwrap();
            // Bounded in case the parent dies without killing us.
            for i in 0..20_000u64 {
                let seq = journal
                    .record(
                        &run,
                        "target",
                        "step",
                        Phase::Intent,
                        &json!({"i": i, "pad": "x".repeat(200)}),
                    )
                    .unwrap();
                writeln!(out, "RECORDED {seq} {i}").unwrap();
                out.flush().unwrap();
            }
        }
        other => panic!("unknown helper mode {other}"),
    }
}
