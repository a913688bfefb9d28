//! Planning at scale: classification of a synthetic organization of 10,000 projects × 30
//! variables and 500 contexts × 20 variables (the size the planner must handle in under 1 s).
//!
//! Run with `cargo bench --bench plan`. Prints the time to build the inventory, min and median
//! of several classification runs in process, and then what a user sees: the `rekey plan`
//! binary run end to end on the inventory file (read JSON, classify, write the YAML plan), its
//! wall time and its peak memory (the children's maximum resident set, from getrusage).
//! Targets: under 1 s and under 300 MB.

use rekey::classify::{RuleSet, classify, synthetic::synthetic_inventory};
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

const PROJECTS: usize = 10_000;
const VARS: usize = 30;
const CONTEXTS: usize = 500;
const CTX_VARS: usize = 20;
const RUNS: usize = 9;

/// Set in the child that writes the synthetic inventory file (see `main`).
const GENERATE_ENV: &str = "REKEY_PLAN_BENCH_GENERATE";

fn main() {
    // The end-to-end run comes first, while this process is still small: Linux carries the
    // parent's peak RSS into a spawned child's ru_maxrss, so a parent holding the inventory
    // would inflate the child's figure. A child process writes the inventory file instead.
    if let Some(path) = std::env::var_os(GENERATE_ENV) {
        let inv = synthetic_inventory(PROJECTS, VARS, CONTEXTS, CTX_VARS);
        let json = serde_json::to_vec(&inv).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("cannot write the inventory: {e}");
            std::process::exit(1);
        }
        return;
    }
    end_to_end();

    let started = Instant::now();
    let inv = synthetic_inventory(PROJECTS, VARS, CONTEXTS, CTX_VARS);
    let generated = started.elapsed();

    let started = Instant::now();
    let rules = match RuleSet::builtin() {
        Ok(rules) => rules,
        Err(e) => {
            eprintln!("built-in rules: {e}");
            std::process::exit(1);
        }
    };
    let compiled = started.elapsed();

    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let started = Instant::now();
        let c = classify(black_box(&inv), black_box(&rules));
        times.push(started.elapsed());
        last = Some(c);
    }
    times.sort();
    let Some(c) = last else { return };

    println!(
        "inventory: {PROJECTS} projects × {VARS} vars + {CONTEXTS} contexts × {CTX_VARS} vars = {} variables (generated in {generated:.1?})",
        inv.variable_count()
    );
    println!("rules: built-in set compiled in {compiled:.1?}");
    println!(
        "classify: min {:.1?}, median {:.1?} over {RUNS} runs -> {} targets ({} bindings), {} ignored, {} unclassified",
        times[0],
        times[RUNS / 2],
        c.targets.len(),
        c.targets
            .iter()
            .map(|t| t.target.bindings.len())
            .sum::<usize>(),
        c.ignored.len(),
        c.unclassified.len()
    );
}

/// Runs the release `rekey plan` binary on the inventory as a file, as a user would, and
/// reports each run's own peak memory (wait4's rusage of that child).
fn end_to_end() {
    let dir = std::env::temp_dir().join(format!("rekey-plan-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let inventory = dir.join("inventory.json");
    let plan = dir.join("plan.yaml");
    let generated = std::env::current_exe()
        .and_then(|exe| Command::new(exe).env(GENERATE_ENV, &inventory).status());
    if !matches!(generated, Ok(s) if s.success()) {
        eprintln!("generating the inventory failed: {generated:?}");
        std::process::exit(1);
    }
    let inventory_bytes = std::fs::metadata(&inventory).map(|m| m.len()).unwrap_or(0);
    let mut peak_kib = 0;
    let mut times = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_rekey"))
            .args(["plan", "--inventory"])
            .arg(&inventory)
            .arg("--out")
            .arg(&plan)
            .arg("--output")
            .arg("json")
            .stdout(std::process::Stdio::null())
            .spawn();
        let Ok(child) = child else {
            eprintln!("cannot start rekey: {child:?}");
            std::process::exit(1);
        };
        // SAFETY: wait4 on our own child's pid with valid out-pointers; std never waits on it.
        let (status, usage) = unsafe {
            let mut status = 0;
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
            (status, usage)
        };
        times.push(started.elapsed());
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            eprintln!("rekey plan failed: wait status {status}");
            std::process::exit(1);
        }
        peak_kib = peak_kib.max(usage.ru_maxrss);
    }
    times.sort();
    let plan_bytes = std::fs::metadata(&plan).map(|m| m.len()).unwrap_or(0);
    println!(
        "rekey plan (binary, end to end): inventory {:.1} MB -> plan {:.1} MB; wall min {:.0?}, median {:.0?} over 5 runs; peak memory {:.0} MB",
        inventory_bytes as f64 / 1e6,
        plan_bytes as f64 / 1e6,
        times[0],
        times[2],
        peak_kib as f64 / 1024.0
    );
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "targets: under 1 s {} ; under 300 MB {}",
        verdict(times[2] < Duration::from_secs(1)),
        verdict(peak_kib < 300 * 1024)
    );
    if std::env::var_os("REKEY_BENCH_KEEP").is_some() {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
