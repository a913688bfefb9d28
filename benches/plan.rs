//! Planning at scale: a realistic organization of 10,000 projects × 30 variables and 500
//! contexts × 20 variables whose values mostly differ per project, with tokens of many kinds
//! (`synthetic::realistic_inventory`): about 190,000 targets.
//!
//! Run with `cargo bench --bench plan`. Prints what a user sees, each step the release binary
//! run end to end with its wall time and its peak memory (that child's maximum resident set,
//! from wait4): `rekey plan` (read the JSON inventory, classify, write the YAML plan), then —
//! once every REVIEW-REQUIRED is decided mechanically — `rekey validate` of that plan, and of
//! the same plan split by project, and `rekey apply --dry-run` of the plan against the sandbox
//! of its world (its output streamed to a file, whose size is shown). Then classification
//! alone, in process. `REKEY_PLAN_BENCH_SKIP_DRY_RUN=1` leaves the dry run out.
//! Targets: each step under 1.5 s and 400 MB.
//!
//! To iterate on one step: `REKEY_PLAN_BENCH_ONLY=dry-run` measures only the dry run (the plan
//! is still written and decided once, unmeasured); `REKEY_PLAN_BENCH_DIR=DIR` works in DIR and
//! keeps it, reusing its `inventory.json` and decided `plan.yaml` when present, and a sandbox
//! still running from an earlier run (`sandbox.env`, `sandbox.pid`: started and left running
//! there when absent; `kill $(cat DIR/sandbox.pid)` stops it).
use rekey::classify::synthetic::{decide_review_required, realistic_inventory};
use rekey::classify::{RuleSet, classify};
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

/// The binary's allocator, so that what is measured in process is what `rekey` does.
#[global_allocator]
static ALLOCATOR: rekey::Allocator = rekey::Allocator;

const PROJECTS: usize = 10_000;
const VARS: usize = 30;
const CONTEXTS: usize = 500;
const CTX_VARS: usize = 20;
const RUNS: usize = 9;

/// Set in the child that writes the synthetic inventory file (see `main`).
const GENERATE_ENV: &str = "REKEY_PLAN_BENCH_GENERATE";
/// Set in the child that decides a plan's REVIEW-REQUIRED in place (file or directory).
const DECIDE_ENV: &str = "REKEY_PLAN_BENCH_DECIDE";
/// `dry-run`: measure only the dry run.
const ONLY_ENV: &str = "REKEY_PLAN_BENCH_ONLY";
/// A directory to work in, kept and reused between runs.
const DIR_ENV: &str = "REKEY_PLAN_BENCH_DIR";

fn only_dry_run() -> bool {
    std::env::var(ONLY_ENV).is_ok_and(|v| v == "dry-run")
}

fn main() {
    // The end-to-end run comes first, while this process is still small: Linux carries the
    // parent's peak RSS into a spawned child's ru_maxrss, so a parent holding the inventory
    // would inflate the child's figure. A child process writes the inventory file instead.
    if let Some(path) = std::env::var_os(DECIDE_ENV) {
        let path = std::path::PathBuf::from(path);
        let files: Vec<std::path::PathBuf> = if path.is_dir() {
            std::fs::read_dir(&path)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n != "index.yaml"))
                .collect()
        } else {
            vec![path]
        };
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if let Err(e) = std::fs::write(&file, decide_review_required(&text)) {
                eprintln!("cannot write {}: {e}", file.display());
                std::process::exit(1);
            }
        }
        return;
    }
    if let Some(path) = std::env::var_os(GENERATE_ENV) {
        let inv = realistic_inventory(PROJECTS, VARS, CONTEXTS, CTX_VARS);
        let json = serde_json::to_vec(&inv).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, json) {
            eprintln!("cannot write the inventory: {e}");
            std::process::exit(1);
        }
        return;
    }
    end_to_end();
    if only_dry_run() {
        return;
    }

    let started = Instant::now();
    let inv = realistic_inventory(PROJECTS, VARS, CONTEXTS, CTX_VARS);
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

/// How a measured run is started: its environment and where its stdout goes.
#[derive(Default)]
struct Run<'a> {
    env: &'a [(String, String)],
    stdout: Option<&'a std::path::Path>,
}

/// One run of the release binary: wall time and that child's peak memory (wait4's rusage).
fn timed(args: &[&std::ffi::OsStr], ok_codes: &[i32], run: &Run) -> (Duration, i64) {
    let stdout = match run.stdout.map(std::fs::File::create) {
        None => std::process::Stdio::null(),
        Some(Ok(file)) => file.into(),
        Some(Err(e)) => {
            eprintln!("cannot create the output file: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args(args)
        .envs(run.env.iter().map(|(k, v)| (k, v)))
        .stdout(stdout)
        .stderr(std::process::Stdio::null())
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
    let took = started.elapsed();
    if !(libc::WIFEXITED(status) && ok_codes.contains(&libc::WEXITSTATUS(status))) {
        eprintln!("rekey {args:?} failed: wait status {status}");
        std::process::exit(1);
    }
    (took, usage.ru_maxrss)
}

/// Runs a child of this benchmark with `env` set to `path` (generate, decide).
fn helper(env: &str, path: &std::path::Path) {
    let done = std::env::current_exe().and_then(|exe| Command::new(exe).env(env, path).status());
    if !matches!(done, Ok(s) if s.success()) {
        eprintln!("{env} failed: {done:?}");
        std::process::exit(1);
    }
}

/// `runs` timings of one command: median wall time and the largest peak memory.
fn measure(what: &str, args: &[&std::ffi::OsStr], ok_codes: &[i32], runs: usize) {
    measure_with(what, args, ok_codes, runs, &Run::default())
}

fn measure_with(what: &str, args: &[&std::ffi::OsStr], ok_codes: &[i32], runs: usize, run: &Run) {
    let mut times = Vec::new();
    let mut peak_kib = 0;
    for _ in 0..runs {
        let (took, kib) = timed(args, ok_codes, run);
        times.push(took);
        peak_kib = peak_kib.max(kib);
    }
    times.sort();
    let median = times[runs / 2];
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!(
        "{what}: wall min {:.2?}, median {median:.2?} over {runs} runs; peak memory {:.0} MB [1.5 s {}; 400 MB {}]",
        times[0],
        peak_kib as f64 / 1024.0,
        verdict(median <= Duration::from_millis(1500)),
        verdict(peak_kib <= 400 * 1024)
    );
}

/// The user's steps on the realistic inventory, each the release binary as a user runs it.
fn end_to_end() {
    let kept = std::env::var_os(DIR_ENV).map(std::path::PathBuf::from);
    let dir = kept.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("rekey-plan-bench-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }
    let inventory = dir.join("inventory.json");
    let plan = dir.join("plan.yaml");
    let split = dir.join("split");
    let reuse = |p: &std::path::Path| kept.is_some() && p.exists();
    if !reuse(&inventory) {
        helper(GENERATE_ENV, &inventory);
    }
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    if only_dry_run() {
        if !reuse(&plan) {
            let args = [
                os("plan"),
                os("--inventory"),
                inventory.as_os_str(),
                os("--out"),
                plan.as_os_str(),
            ];
            timed(&args, &[0], &Run::default());
            helper(DECIDE_ENV, &plan);
        }
        dry_run(&dir, &plan, kept.is_some());
        return;
    }
    measure(
        "rekey plan (inventory JSON -> YAML plan)",
        &[
            os("plan"),
            os("--inventory"),
            inventory.as_os_str(),
            os("--out"),
            plan.as_os_str(),
            os("--output"),
            os("json"),
        ],
        &[0],
        5,
    );
    let size =
        |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let targets = std::fs::read_to_string(&plan)
        .map(|t| t.matches("\n  - id: ").count())
        .unwrap_or(0);
    println!(
        "inventory {:.1} MB -> plan {:.1} MB, {targets} targets",
        size(&inventory),
        size(&plan)
    );
    helper(DECIDE_ENV, &plan);
    measure(
        "rekey validate (every REVIEW-REQUIRED decided)",
        &[os("validate"), plan.as_os_str()],
        &[0],
        5,
    );
    // The dry run starts a sandbox of the plan's world (about 30 s) before it is measured.
    if std::env::var_os("REKEY_PLAN_BENCH_SKIP_DRY_RUN").is_none() {
        dry_run(&dir, &plan, false);
    }
    measure(
        "rekey plan --split-by project",
        &[
            os("plan"),
            os("--inventory"),
            inventory.as_os_str(),
            os("--split-by"),
            os("project"),
            os("--out"),
            split.as_os_str(),
            os("--output"),
            os("json"),
        ],
        &[0],
        3,
    );
    helper(DECIDE_ENV, &split);
    measure(
        "rekey validate DIR (split by project, 10,000+ files)",
        &[os("validate"), split.as_os_str()],
        &[0],
        3,
    );
    if kept.is_some() || std::env::var_os("REKEY_BENCH_KEEP").is_some() {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// `rekey apply PLAN --dry-run` against `rekey sandbox serve --from-plan PLAN` (simulators of
/// every owner in another process, as a team would rehearse): wall time, peak memory and the
/// size of what it printed. The rate limits that protect real services are lifted
/// (`--rate-limit circleci=0 --rate-limit aws-iam=0`): the figure is rekey's own cost.
fn dry_run(dir: &std::path::Path, plan: &std::path::Path, keep_sandbox: bool) {
    // What the sandbox printed, and its pid: reused while it runs when kept.
    let (env_file, pid_file) = (dir.join("sandbox.env"), dir.join("sandbox.pid"));
    let running = |pid: &str| {
        // SAFETY: signal 0 only checks that the process exists.
        pid.trim()
            .parse::<libc::pid_t>()
            .is_ok_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
    };
    let kept = keep_sandbox
        && std::fs::read_to_string(&pid_file).is_ok_and(|pid| running(&pid))
        && env_file.exists();
    let (printed, sandbox) = if kept {
        println!(
            "sandbox of the plan's world reused ({})",
            pid_file.display()
        );
        (std::fs::read_to_string(&env_file).unwrap_or_default(), None)
    } else {
        let (printed, child) = start_sandbox(plan);
        if keep_sandbox {
            let saved = std::fs::write(&env_file, &printed)
                .and_then(|_| std::fs::write(&pid_file, child.id().to_string()));
            if let Err(e) = saved {
                eprintln!("cannot keep the sandbox's environment: {e}");
            }
            println!("sandbox left running: kill $(cat {})", pid_file.display());
            (printed, None)
        } else {
            (printed, Some(child))
        }
    };
    // NAME=value lines, then the plan's endpoints as `#     name: url` comments.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut endpoints = String::new();
    for line in printed.lines() {
        if let Some(endpoint) = line.strip_prefix("#     ") {
            endpoints.push_str(&format!("  {endpoint}\n"));
        } else if let Some((k, v)) = line.split_once('=').filter(|_| !line.starts_with('#')) {
            env.push((k.to_string(), v.to_string()));
        }
    }
    // The plan, pointed at the simulators (GCP and Azure are found through `endpoints:`).
    let served = dir.join("plan-sandbox.yaml");
    let text = std::fs::read_to_string(plan).unwrap_or_default();
    let text = if endpoints.is_empty() {
        text
    } else {
        text.replacen(
            "\ntargets:\n",
            &format!("\nendpoints:\n{endpoints}\ntargets:\n"),
            1,
        )
    };
    if let Err(e) = std::fs::write(&served, text) {
        eprintln!("cannot write {}: {e}", served.display());
        std::process::exit(1);
    }
    env.push((
        "REKEY_STATE".into(),
        dir.join("state").display().to_string(),
    ));
    let output = dir.join("dry-run.txt");
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    measure_with(
        "rekey apply --dry-run (sandbox of the plan's world)",
        &[
            os("apply"),
            served.as_os_str(),
            os("--dry-run"),
            os("--rate-limit"),
            os("circleci=0"),
            os("--rate-limit"),
            os("aws-iam=0"),
        ],
        &[0, 1],
        3,
        &Run {
            env: &env,
            stdout: Some(&output),
        },
    );
    let printed = std::fs::read_to_string(&output).unwrap_or_default();
    println!(
        "dry run printed {:.1} MB: {} would rotate, {} would skip, {} would fail",
        printed.len() as f64 / 1e6,
        printed.matches(": would rotate\n").count(),
        printed.matches(": would skip").count(),
        printed.matches(": WOULD FAIL").count()
    );
    if let Some(mut sandbox) = sandbox {
        let _ = sandbox.kill();
        let _ = sandbox.wait();
    }
}

/// `rekey sandbox serve --from-plan PLAN`, timed until it is ready: what it printed up to
/// `# ready`, and the running child.
fn start_sandbox(plan: &std::path::Path) -> (String, std::process::Child) {
    use std::io::BufRead;
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_rekey"))
        .args([
            std::ffi::OsStr::new("sandbox"),
            "serve".as_ref(),
            "--from-plan".as_ref(),
        ])
        .arg(plan)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(mut sandbox) = child else {
        eprintln!("cannot start the sandbox: {child:?}");
        std::process::exit(1);
    };
    let mut printed = String::new();
    let mut ready = false;
    if let Some(out) = sandbox.stdout.take() {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.starts_with("# ready") {
                ready = true;
                break;
            }
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    if !ready {
        let _ = sandbox.kill();
        let _ = sandbox.wait();
        eprintln!("the sandbox did not start");
        std::process::exit(1);
    }
    println!(
        "sandbox of the plan's world started in {:.1?}",
        started.elapsed()
    );
    (printed, sandbox)
}
