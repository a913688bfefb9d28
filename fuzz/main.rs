//! Fuzzing of every parser of outside input, on the stable toolchain (cargo-fuzz needs
//! nightly): a mutation fuzzer seeded with the repository's own fixtures, each input run under
//! `catch_unwind` on a thread with a hunt worker's 2 MiB stack (a stack overflow aborts the
//! process: it is counted as an abort by the parent of `all`).
//!
//! ```text
//! cargo bench --bench fuzz -- list                # the targets
//! cargo bench --bench fuzz -- TARGET 1000000      # one target, N inputs
//! cargo bench --bench fuzz -- all 1000000         # every target, one child process each
//! ```
//!
//! Each run prints inputs, panics, time and peak RSS (the process's `ru_maxrss`); an input
//! that panicked is written to `target/fuzz-crashes/TARGET-N.bin` to replay with
//! `cargo bench --bench fuzz -- TARGET replay FILE`. Inputs are deterministic per target and
//! count (a fixed seed), so a run is reproducible.
//!
//! - [`mutate`]: the mutations (bytes, splices, dictionary tokens, nesting),
//! - [`targets`]: the parsers and what each is seeded and fed with.

mod mutate;
mod targets;

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Instant;

/// Mutated inputs are kept below this size: the parsers' bounds are tested by the hostile
/// suites; here the point is many shapes quickly.
const MAX_INPUT: usize = 64 << 10;

/// The last panic's message, recorded by the hook instead of printed per input.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn main() {
    // `cargo bench` passes `--bench`; anything starting with `--` is the harness's.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let what = args.first().map(String::as_str).unwrap_or("list");
    let n: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    match what {
        "list" => {
            for t in targets::all() {
                println!("{:<16} {}", t.name, t.about);
            }
        }
        "all" => all(n),
        name => {
            let Some(target) = targets::all().into_iter().find(|t| t.name == name) else {
                eprintln!("no target `{name}` (try `list`)");
                std::process::exit(2);
            };
            if args.get(1).map(String::as_str) == Some("replay") {
                let Some(file) = args.get(2) else {
                    eprintln!("replay needs a file");
                    std::process::exit(2);
                };
                let input = std::fs::read(file).unwrap_or_else(|e| {
                    eprintln!("{file}: {e}");
                    std::process::exit(2)
                });
                (target.run)(&input);
                println!("no panic");
                return;
            }
            let code = on_worker_stack(move || one(target, n));
            std::process::exit(code);
        }
    }
}

/// Runs `f` on a thread with a hunt worker's stack size (`std::thread`'s default, 2 MiB).
fn on_worker_stack(f: impl FnOnce() -> i32 + Send + 'static) -> i32 {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .and_then(|h| {
            h.join()
                .map_err(|_| std::io::Error::other("fuzz thread died"))
        })
        .unwrap_or(1)
}

/// Fuzzes one target with `n` inputs; prints one summary line; 1 when anything panicked.
fn one(target: targets::Target, n: u64) -> i32 {
    std::panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(info.to_string());
        }
    }));
    let seeds: Vec<Vec<u8>> = (target.seeds)()
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let mut pool: Vec<Vec<u8>> = seeds.clone();
    let mut rng = mutate::Rng::new(fnv(target.name.as_bytes()));
    let started = Instant::now();
    let (mut panics, mut accepted) = (0u64, 0u64);
    for i in 0..n {
        let input = if (i as usize) < seeds.len() {
            seeds[i as usize].clone()
        } else {
            mutate::mutate(&mut rng, &pool, target.dict, MAX_INPUT)
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&input))) {
            Ok(true) => {
                accepted += 1;
                // Inputs the parser accepted are good parents: they reach deeper code.
                if pool.len() < seeds.len() + 512 {
                    pool.push(input);
                } else {
                    let at = seeds.len() + rng.below(512);
                    pool[at] = input;
                }
            }
            Ok(false) => {}
            Err(_) => {
                panics += 1;
                let message = LAST_PANIC
                    .lock()
                    .ok()
                    .and_then(|mut l| l.take())
                    .unwrap_or_default();
                let dir =
                    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
                let file = dir.join(format!("{}-{i}.bin", target.name));
                let _ = std::fs::create_dir_all(&dir);
                let _ = std::fs::write(&file, &input);
                if panics <= 5 {
                    eprintln!(
                        "PANIC {} input {i}: {message} ({})",
                        target.name,
                        file.display()
                    );
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:<16} inputs {n:>9}  accepted {accepted:>9}  panics {panics}  {secs:>7.1} s  {:>7.0}/s  peak RSS {:>4} MiB",
        target.name,
        n as f64 / secs.max(1e-9),
        peak_rss() >> 20
    );
    i32::from(panics > 0)
}

/// Every target in its own child process (so that an abort is seen, and each peak is its own).
fn all(n: u64) {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut failed = false;
    for t in targets::all() {
        let out = std::process::Command::new(&exe)
            .arg(t.name)
            .arg(n.to_string())
            .stderr(std::process::Stdio::inherit())
            .output();
        match out {
            Ok(o) => {
                print!("{}", String::from_utf8_lossy(&o.stdout));
                if !o.status.success() {
                    failed = true;
                    if o.status.code().is_none() {
                        println!("{:<16} ABORTED: {}", t.name, o.status);
                    }
                }
            }
            Err(e) => {
                failed = true;
                println!("{:<16} could not run: {e}", t.name);
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}

/// This process's peak resident set, in bytes.
fn peak_rss() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        return 0;
    }
    r.ru_maxrss as u64 * 1024
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
