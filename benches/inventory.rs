//! Live inventory of a large organization against the CircleCI sandbox with a WAN-like
//! latency: the default concurrency against the same requests made one at a time.
//!
//! `cargo bench --bench inventory`. Knobs (environment): `REKEY_BENCH_PROJECTS` (default
//! 1000), `REKEY_BENCH_LATENCY_MS` (default 50), `REKEY_BENCH_SEQUENTIAL_PROJECTS` (default:
//! all; fewer measures the one-at-a-time baseline on that many projects and scales it per
//! request, which the output says).

use std::time::{Duration, Instant};

use rekey::circleci::CircleCiClient;
use rekey::inventory::Inventory;
use rekey::inventory::live::{DEFAULT_CONCURRENCY, LiveOptions, take_live};
use rekey::sandbox::{
    CheckoutKeySpec, CircleCiState, ContextSpec, ProjectSpec, Rng, Sandbox, fake,
};
use rekey::secret::Secret;

const ORG: &str = "gh/bench";
const TARGET_SPEEDUP: f64 = 10.0;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn organization(projects: usize) -> CircleCiState {
    let mut rng = Rng::from_entropy();
    let mut state = CircleCiState::new(fake::circleci_token(&mut rng));
    for i in 0..projects {
        state.add_project(
            ProjectSpec::new(format!("{ORG}/service-{i:04}"))
                .env("AWS_ACCESS_KEY_ID", fake::aws_access_key_id(&mut rng))
                .env(
                    "AWS_SECRET_ACCESS_KEY",
                    fake::aws_secret_access_key(&mut rng),
                )
                .env("NPM_TOKEN", fake::npm_token(&mut rng))
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .checkout_key(CheckoutKeySpec::deploy_key()),
        );
    }
    for name in ["aws-prod", "release", "notifications"] {
        let mut context = ContextSpec::new(ORG, name);
        for v in 0..5 {
            context = context.env(format!("VAR_{v}"), fake::password(&mut rng));
        }
        state.add_context(context);
    }
    state
}

struct Run {
    elapsed: Duration,
    requests: usize,
    inventory: Inventory,
}

async fn run(sandbox: &Sandbox, client: &CircleCiClient, opts: &LiveOptions) -> Run {
    sandbox.clear_requests();
    let started = Instant::now();
    let inventory = match take_live(client, opts).await {
        Ok(inventory) => inventory,
        Err(e) => {
            eprintln!("inventory failed: {e}");
            std::process::exit(1);
        }
    };
    let elapsed = started.elapsed();
    Run {
        elapsed,
        requests: sandbox.requests().len(),
        inventory,
    }
}

fn check(run: &Run, projects: usize, contexts: usize) {
    let inv = &run.inventory;
    if !inv.errors.is_empty() || inv.projects.len() != projects || inv.contexts.len() != contexts {
        eprintln!(
            "incomplete inventory: {} projects, {} contexts, {} errors",
            inv.projects.len(),
            inv.contexts.len(),
            inv.errors.len()
        );
        std::process::exit(1);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let projects = env_usize("REKEY_BENCH_PROJECTS", 1000).max(1);
    let latency = Duration::from_millis(env_usize("REKEY_BENCH_LATENCY_MS", 50) as u64);
    let sequential_projects =
        env_usize("REKEY_BENCH_SEQUENTIAL_PROJECTS", projects).clamp(1, projects);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            std::process::exit(1);
        }
    };
    runtime.block_on(async move {
        let state = organization(projects);
        let token = state.token().to_owned();
        let sandbox = match Sandbox::start(state).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sandbox: {e}");
                std::process::exit(1);
            }
        };
        let client = match CircleCiClient::new(&sandbox.base_url(), Secret::new(token)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("client: {e}");
                std::process::exit(1);
            }
        };
        sandbox.set_latency(latency);
        println!(
            "live inventory: {projects} projects, 3 contexts, {} ms latency per request",
            latency.as_millis()
        );

        let concurrent_opts = LiveOptions {
            org: Some(ORG.into()),
            concurrency: DEFAULT_CONCURRENCY,
            ..LiveOptions::default()
        };
        let concurrent = run(&sandbox, &client, &concurrent_opts).await;
        check(&concurrent, projects, 3);
        println!(
            "  concurrent (default bound: {DEFAULT_CONCURRENCY} projects/contexts at once, \
             their 3 reads together): {} requests in {:.2} s",
            concurrent.requests,
            concurrent.elapsed.as_secs_f64()
        );

        let sequential_opts = if sequential_projects == projects {
            LiveOptions {
                concurrency: 1,
                ..concurrent_opts.clone()
            }
        } else {
            // The first N projects by name, plus the same discovery and contexts.
            LiveOptions {
                org: None,
                projects: concurrent
                    .inventory
                    .projects
                    .iter()
                    .take(sequential_projects)
                    .map(|p| p.slug.clone())
                    .collect(),
                concurrency: 1,
                ..LiveOptions::default()
            }
        };
        let sequential = run(&sandbox, &client, &sequential_opts).await;
        let per_request = sequential.elapsed.as_secs_f64() / sequential.requests.max(1) as f64;
        let sequential_secs = if sequential_projects == projects {
            check(&sequential, projects, 3);
            println!(
                "  one request at a time (concurrency 1): {} requests in {:.2} s",
                sequential.requests,
                sequential.elapsed.as_secs_f64()
            );
            sequential.elapsed.as_secs_f64()
        } else {
            check(&sequential, sequential_projects, 0);
            let scaled = per_request * concurrent.requests as f64;
            println!(
                "  one request at a time (concurrency 1), MEASURED on {sequential_projects} \
                 projects: {} requests in {:.2} s ({:.1} ms a request); SCALED to the {} \
                 requests of the full run: {scaled:.2} s",
                sequential.requests,
                sequential.elapsed.as_secs_f64(),
                per_request * 1000.0,
                concurrent.requests
            );
            scaled
        };
        let speedup = sequential_secs / concurrent.elapsed.as_secs_f64();
        println!(
            "  speed-up: {speedup:.1}x (target >= {TARGET_SPEEDUP}x); {:.0} requests/s concurrent, \
             {:.0} requests/s one at a time",
            concurrent.requests as f64 / concurrent.elapsed.as_secs_f64(),
            1.0 / per_request
        );
        sandbox.shutdown().await;
        if speedup < TARGET_SPEEDUP {
            eprintln!("speed-up below target");
            std::process::exit(1);
        }
    });
}
