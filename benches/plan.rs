//! Planning at scale: classification of a synthetic organization of 10,000 projects × 30
//! variables and 500 contexts × 20 variables (the size the planner must handle in under 1 s).
//!
//! Run with `cargo bench --bench plan`. Prints the time to build the inventory, then min and
//! median of several classification runs. Generation lives in the library
//! (`rekey::classify::synthetic`) so that later stages (plan writing, memory) can reuse it.

use rekey::classify::{RuleSet, classify, synthetic::synthetic_inventory};
use std::hint::black_box;
use std::time::{Duration, Instant};

const PROJECTS: usize = 10_000;
const VARS: usize = 30;
const CONTEXTS: usize = 500;
const CTX_VARS: usize = 20;
const RUNS: usize = 9;

fn main() {
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
