//! Rotation at scale: 200 AWS targets with 3 bindings each (600 projects), against the
//! in-process CircleCI and AWS simulators with 50 ms of latency on every call.
//!
//! Run with `cargo bench --bench apply`. Reports, in the same run:
//! - the concurrent apply (parallelism 20) and its ratio to the critical-path bound
//!   (calls on one target's path × 50 ms × ceil(200 / parallelism)), target ≤ 1.5×;
//! - one target after another (parallelism 1), measured on 20 targets and scaled per target
//!   (200 would take minutes), and the speed-up, target ≥ 10×;
//! - the process's peak memory (VmHWM, simulators included), target < 200 MB;
//! - the same concurrent apply with its state on S3 (moto's server behind a proxy that delays
//!   every S3 call by 20 ms) beside the local journal, alternating (medians of 3 each),
//!   target ≤ 1.3× (skipped, said so, when moto is not installed: `.venv-moto/bin/moto_server`
//!   or `$REKEY_MOTO_SERVER`).

#[path = "../tests/support/s3proxy.rs"]
#[allow(dead_code)]
mod s3proxy;

use rekey::engine::events::Silent;
use rekey::engine::run::{ApplyOptions, Environment, ProviderSet, apply};
use rekey::providers::aws::AwsIamProvider;
use rekey::sandbox::aws::{AwsSandbox, AwsState, KeySpec};
use rekey::sandbox::{CircleCiState, ProjectSpec, Sandbox};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TARGETS: usize = 200;
const BINDINGS: usize = 3;
const LATENCY: Duration = Duration::from_millis(50);
const PARALLELISM: usize = 20;
const SEQUENTIAL_SAMPLE: usize = 20;

struct World {
    circleci: Sandbox,
    aws: AwsSandbox,
    plan: String,
}

/// `n` targets: IAM user `u{i}` with one key, held in projects gh/bench/p{i}-{0,1,2}.
async fn world(n: usize) -> World {
    let mut aws = AwsState::new("123456789012");
    let mut keys = Vec::new();
    for i in 0..n {
        let user = format!("u{i}");
        let _ = aws.add_user(&user, rekey::sandbox::aws::Access::None);
        match aws.add_key(
            &user,
            KeySpec::active().created_at(chrono::Utc::now() - chrono::Duration::days(400)),
        ) {
            Ok(k) => keys.push(k),
            Err(e) => panic!("setup: {e}"),
        }
    }
    let aws = AwsSandbox::start(aws)
        .await
        .expect("start the AWS simulator");
    let mut state = CircleCiState::new("bench-token");
    let mut plan = String::from(
        "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: bench}\ndefaults: {grace: 0s}\ntargets:\n",
    );
    for (i, key) in keys.iter().enumerate() {
        plan.push_str(&format!(
            "  - id: t{i}\n    provider: aws-iam\n    principal: {{user: u{i}}}\n    bindings:\n"
        ));
        for b in 0..BINDINGS {
            let slug = format!("gh/bench/p{i}-{b}");
            state.add_project(
                ProjectSpec::new(&slug)
                    .env("AWS_ACCESS_KEY_ID", key.access_key_id.clone())
                    .env(
                        "AWS_SECRET_ACCESS_KEY",
                        key.secret_access_key.expose().to_string(),
                    ),
            );
            plan.push_str(&format!(
                "      - project: {slug}\n        vars: {{access_key_id: AWS_ACCESS_KEY_ID, secret_access_key: AWS_SECRET_ACCESS_KEY}}\n"
            ));
        }
    }
    let circleci = Sandbox::start(state)
        .await
        .expect("start the CircleCI simulator");
    circleci.set_latency(LATENCY);
    aws.set_latency(LATENCY);
    World {
        circleci,
        aws,
        plan,
    }
}

/// Applies the world's plan (state in a fresh temporary directory, or at `state` when given);
/// returns wall time and the number of calls made to both simulators.
async fn run(world: &World, parallelism: usize, state: Option<&str>) -> (Duration, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let state_dir = state.map_or_else(|| dir.path().to_path_buf(), std::path::PathBuf::from);
    let client = rekey::circleci::CircleCiClient::new(
        &world.circleci.base_url(),
        rekey::secret::Secret::new("bench-token"),
    )
    .expect("client");
    let providers =
        ProviderSet::default().with(Arc::new(AwsIamProvider::new(&world.aws.sdk_config())));
    let env = Environment {
        circleci: client,
        providers,
        stash_key: rekey::engine::stash::StashKey::generate().expect("key"),
        hunt_aws: None,
    };
    let options = ApplyOptions {
        state_dir,
        parallelism,
        verify_backoff: Duration::from_millis(50),
        ..Default::default()
    };
    let plan = rekey::plan::load::parse("bench.yaml", &world.plan).expect("plan");
    let calls_before = world.circleci.requests().len() + world.aws.requests().len();
    let started = Instant::now();
    let report = apply(
        "bench.yaml",
        &world.plan,
        plan,
        env,
        options,
        Arc::new(Silent),
    )
    .await
    .expect("apply");
    let elapsed = started.elapsed();
    let done = report
        .targets
        .iter()
        .filter(|t| matches!(t.outcome, rekey::engine::target::Outcome::Done))
        .count();
    assert_eq!(
        done,
        report.targets.len(),
        "every target rotates: {:?}",
        report
            .targets
            .iter()
            .find(|t| !matches!(t.outcome, rekey::engine::target::Outcome::Done))
    );
    let calls = world.circleci.requests().len() + world.aws.requests().len() - calls_before;
    (elapsed, calls)
}

fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let big = world(TARGETS).await;
        let (concurrent, calls) = run(&big, PARALLELISM, None).await;
        let per_target = calls as f64 / TARGETS as f64;
        let bound = Duration::from_secs_f64(per_target * LATENCY.as_secs_f64() * (TARGETS.div_ceil(PARALLELISM)) as f64);
        drop(big);

        let small = world(SEQUENTIAL_SAMPLE).await;
        let (sequential_sample, _) = run(&small, 1, None).await;
        let sequential = sequential_sample.mul_f64(TARGETS as f64 / SEQUENTIAL_SAMPLE as f64);

        println!("apply: {TARGETS} targets × {BINDINGS} bindings, {} ms latency per call, {per_target:.1} calls per target", LATENCY.as_millis());
        println!(
            "concurrent (parallelism {PARALLELISM}): {concurrent:.2?}; critical-path bound {bound:.2?}; ratio {:.2}× (target ≤ 1.5×)",
            concurrent.as_secs_f64() / bound.as_secs_f64()
        );
        println!(
            "one target after another: {sequential_sample:.2?} for {SEQUENTIAL_SAMPLE} targets, scaled to {sequential:.1?} for {TARGETS}; speed-up {:.1}× (target ≥ 10×)",
            sequential.as_secs_f64() / concurrent.as_secs_f64()
        );
        println!("peak memory (VmHWM, simulators included): {:.0} MB (target < 200 MB)", peak_mib());
        s3_state().await;
    });
}

const S3_LATENCY: Duration = Duration::from_millis(20);
/// Local and S3 runs, alternating.
const S3_PAIRS: usize = 3;

/// The concurrent apply with local state and with S3 state (20 ms per S3 call), alternating,
/// each on a fresh world.
async fn s3_state() {
    let Some(moto) = Moto::start() else {
        println!("S3 state: SKIPPED, moto is not installed (.venv-moto/bin/moto_server)");
        return;
    };
    let proxy = s3proxy::S3Proxy::start(&moto.url);
    proxy.set_delay(S3_LATENCY);
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&proxy.url)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .load()
        .await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build(),
    );
    s3.create_bucket()
        .bucket("rekey-bench")
        .send()
        .await
        .expect("create the state bucket");
    // Local and S3 runs alternate, each on a fresh world (and a fresh S3 prefix), so that a
    // change in the machine's load falls on both; the medians are compared.
    let mut local = Vec::new();
    let mut remote = Vec::new();
    let mut s3_calls = 0;
    for pair in 0..S3_PAIRS {
        let local_world = world(TARGETS).await;
        local.push(run(&local_world, PARALLELISM, None).await.0);
        drop(local_world);
        let state = format!("s3://rekey-bench/apply-{pair}");
        let rekey::engine::state::StateLocation::S3(location) =
            rekey::engine::state::StateLocation::of(std::path::Path::new(&state))
                .expect("location")
        else {
            panic!("not an S3 location")
        };
        rekey::engine::state::s3::configure(&location, &sdk).expect("configure the S3 state");
        let s3_world = world(TARGETS).await;
        proxy.clear();
        remote.push(run(&s3_world, PARALLELISM, Some(&state)).await.0);
        s3_calls = proxy.seen().len();
    }
    let (local, remote) = (median(&mut local), median(&mut remote));
    println!(
        "state on S3 ({} ms per S3 call, {s3_calls} S3 calls, {:.1} per target): {remote:.2?}; local journal {local:.2?} (medians of {S3_PAIRS} alternating runs); ratio {:.2}× (target ≤ 1.3×)",
        S3_LATENCY.as_millis(),
        s3_calls as f64 / TARGETS as f64,
        remote.as_secs_f64() / local.as_secs_f64()
    );
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// moto's server on a free loopback port, killed by PID when dropped.
struct Moto {
    child: std::process::Child,
    url: String,
}

impl Moto {
    fn start() -> Option<Moto> {
        let exe = std::env::var_os("REKEY_MOTO_SERVER")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-moto/bin/moto_server")
            });
        if !exe.exists() {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .ok()?;
        let child = std::process::Command::new(exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if began.elapsed() > Duration::from_secs(30) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
