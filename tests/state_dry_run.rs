//! A dry run writes nothing to a local state directory: not a file, not an mtime, not the
//! directory itself — neither after a run that ended cleanly nor after one killed with its
//! write-ahead log pending (which an ordinary SQLite connection checkpoints when it closes).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use support::world::{PlanSpec, World};

/// Every entry under `dir` (the directory included): path → (size, mtime ns, bytes).
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, i128, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::metadata(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        out.insert(d.display().to_string(), (0, mtime(&meta), Vec::new()));
        for entry in std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
        {
            let path = entry.path();
            let meta = entry.metadata().unwrap_or_else(|e| panic!("{e}"));
            if meta.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_default();
                out.insert(
                    path.display().to_string(),
                    (meta.len(), mtime(&meta), bytes),
                );
            }
        }
    }
    out
}

fn mtime(meta: &std::fs::Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

fn dry_run(w: &World, plan: &Path) {
    let state = w.state_dir().display().to_string();
    let plan = plan.display().to_string();
    let out = w.run(&["apply", &plan, "--dry-run", "--state-dir", &state], &[]);
    // Mid-run the preview may say "would fail" (exit 1): what matters is that it ran.
    assert!(
        out.stdout.contains("Dry run of plan"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn a_dry_run_leaves_the_state_directory_untouched() {
    let w = World::sandbox(1);
    let plan = w.write_plan(&PlanSpec::default());
    let state = w.state_dir().display().to_string();
    let plan_s = plan.display().to_string();
    // Killed mid-run: the journal's write-ahead log holds records not yet in the database.
    let killed = w.run(
        &[
            "apply",
            &plan_s,
            "--state-dir",
            &state,
            "--verify-backoff-ms",
            "50",
        ],
        &[("REKEY_CRASH_AT", "aws-ci-deployer:write:intent")],
    );
    assert_ne!(killed.code, Some(0));
    let wal = w.state_dir().join("journal.sqlite-wal");
    assert!(
        std::fs::metadata(&wal)
            .map(|m| m.len() > 0)
            .unwrap_or(false),
        "the killed run left a pending write-ahead log"
    );
    let before = snapshot(&w.state_dir());
    std::thread::sleep(std::time::Duration::from_millis(20));
    dry_run(&w, &plan);
    assert_eq!(
        snapshot(&w.state_dir()),
        before,
        "after a dry run with a pending log"
    );

    // Finished cleanly (no log pending): still nothing written.
    w.apply(&plan, &[]).expect_code(0, "apply");
    let before = snapshot(&w.state_dir());
    std::thread::sleep(std::time::Duration::from_millis(20));
    dry_run(&w, &plan);
    assert_eq!(
        snapshot(&w.state_dir()),
        before,
        "after a dry run of a finished state"
    );
}
