//! Rehearsal at scale (issue 15): a 1,000-target plan rehearsed under the `realistic` fault
//! profile (CircleCI, GitHub and AWS throttling bursts with Retry-After, IAM eventual
//! consistency 0.5 s, GCP 1 s, Azure 2 s) with grace periods compressed (24h → 2 s), target
//! under 60 s.
//!
//! The plan: 700 AWS IAM users (each key in two projects, the first binding observed), 100
//! GitHub deploy keys, 100 CircleCI checkout keys, 40 GitHub tokens, 40 exec targets played by
//! rekey's builtin stand-in, 10 GCP service-account keys, 10 Azure app secrets.
//!
//! Run with `cargo bench --bench rehearse` (`-- N PARALLELISM` to change the size and the
//! targets in flight, and `none` or `hostile` for another profile; defaults 1000, 32, realistic). Prints the wall time, the outcome counts, what
//! the simulators answered and the machine's load average.

use rekey::engine::events::Silent;
use rekey::engine::rehearsal::{RehearsalOptions, rehearse};
use rekey::sandbox::profiles::FaultProfile;
use rekey::sandbox::world::StandIn;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// A plan of `n` targets in the proportions above.
fn plan(n: usize) -> (String, BTreeMap<String, StandIn>) {
    let mut text = String::from(
        "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: bench-rehearsal, inventory: {source: circleci-api, org: gh/bench, taken_at: 2026-11-28T09:00:00Z}}\nincident: {since: 2022-12-21T00:00:00Z}\ndefaults: {grace: 24h}\ntargets:\n",
    );
    let mut stand_ins = BTreeMap::new();
    let share = |per_thousand: usize| (n * per_thousand).div_ceil(1000);
    let (aws, deploy, checkout, token, exec, gcp) = (
        share(700),
        share(100),
        share(100),
        share(40),
        share(40),
        share(10),
    );
    for i in 0..n {
        let t = if i < aws {
            format!(
                "  - id: aws-{i}\n    provider: aws-iam\n    principal: {{user: u{i}}}\n    bindings:\n      - project: gh/bench/p{i}\n        vars: {{access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}}\n      - project: gh/bench/q{i}\n        vars: {{access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}}\n    observed:\n      - {{project: gh/bench/p{i}, var: AWS_ACCESS_KEY_ID, masked: xxxx{:04}}}\n",
                i % 10_000
            )
        } else if i < aws + deploy {
            format!(
                "  - id: deploy-{i}\n    provider: github-deploy-key\n    principal: {{repository: bench/r{i}, title: ci}}\n    bindings:\n      - project: gh/bench/p{i}\n        vars: {{private_key: DEPLOY_KEY}}\n        encoding: {{private_key: base64}}\n"
            )
        } else if i < aws + deploy + checkout {
            format!(
                "  - id: checkout-{i}\n    provider: circleci-checkout-key\n    principal: {{project: gh/bench/p{i}}}\n"
            )
        } else if i < aws + deploy + checkout + token {
            format!(
                "  - id: token-{i}\n    provider: github-token\n    principal: {{user: bot{i}}}\n    bindings:\n      - project: gh/bench/p{i}\n        vars: {{token: GITHUB_TOKEN}}\n"
            )
        } else if i < aws + deploy + checkout + token + exec {
            stand_ins.insert(format!("exec-{i}"), StandIn::Builtin);
            format!(
                "  - id: exec-{i}\n    provider: exec\n    principal: {{service: npm}}\n    bindings:\n      - project: gh/bench/p{i}\n        vars: {{value: NPM_TOKEN}}\n    exec:\n      mint: [./npm-token, mint]\n      verify: [./npm-token, verify]\n      revoke: [./npm-token, revoke]\n"
            )
        } else if i < aws + deploy + checkout + token + exec + gcp {
            format!(
                "  - id: gcp-{i}\n    provider: gcp-sa-key\n    principal: {{service_account: sa{i}@bench-prod.iam.gserviceaccount.com}}\n    bindings:\n      - project: gh/bench/p{i}\n        vars: {{key_json: GCLOUD_SERVICE_KEY}}\n"
            )
        } else {
            format!(
                "  - id: azure-{i}\n    provider: azure-app-secret\n    principal: {{app_id: 00000000-0000-4000-8000-{i:012}, tenant_id: 72f988bf-0000-4000-8000-000000000047}}\n    bindings:\n      - project: gh/bench/p{i}\n        vars: {{client_secret: ARM_CLIENT_SECRET}}\n"
            )
        };
        text.push_str(&t);
    }
    (text, stand_ins)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let parallelism: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let faults: FaultProfile = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(FaultProfile::Realistic);
    let (text, stand_ins) = plan(n);
    let plan = rekey::plan::load::parse("bench-rehearsal.yaml", &text).expect("the plan parses");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "rehearse: {n} targets, {faults} faults, grace 24h compressed to 2 s, parallelism {parallelism}; load average before: {}",
        load_average()
    );
    let started = Instant::now();
    let rehearsal = rt
        .block_on(rehearse(
            "bench-rehearsal.yaml",
            plan,
            RehearsalOptions {
                faults,
                seed: 1,
                stand_ins,
                parallelism,
                ..Default::default()
            },
            Arc::new(Silent),
        ))
        .expect("rehearsal");
    let elapsed = started.elapsed();
    let outcomes = rehearsal.outcomes();
    let t = &rehearsal.tally;
    println!(
        "rehearse: {:.1} s wall ({} invocations); outcomes {outcomes:?}; {} requests, {} throttled, {} not yet propagated; secret scan {} values in {} places, {} found; load average after: {}",
        elapsed.as_secs_f64(),
        rehearsal.invocations.len(),
        t.requests,
        t.throttled,
        t.not_yet_propagated,
        rehearsal.secret_scan.values,
        rehearsal.secret_scan.places,
        rehearsal.secret_scan.found.len(),
        load_average()
    );
    assert_eq!(
        outcomes.get("done").copied().unwrap_or_default(),
        n,
        "every target rotates: {}",
        rehearsal.render()
    );
    println!(
        "rehearse: target < 60 s: {}",
        if elapsed.as_secs_f64() < 60.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
