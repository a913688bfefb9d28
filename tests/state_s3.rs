//! State on S3 (DESIGN.md, "Shared state"), against moto's S3 server, with the real binary:
//! moto's own conditional writes; two applies at once; holders SIGKILLed at each point of the
//! protocol (as S3 shows it) and taken over from a fresh working directory; a renewed lease never
//! taken over; S3 answering 503 SlowDown and dropping answers; a dry run that writes nothing;
//! migrate, list, show, unlock.
//! The invariants are checked at the owners: moto's IAM, the CircleCI simulator, and S3 itself.

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::s3proxy::{Fault, S3Proxy};
use support::world::{AwsDouble, PlanSpec, USER, World};

const BUCKET: &str = "rekey-state";
const STATE: &str = "s3://rekey-state/team/prod";
const LOCKED: i32 = 5;

fn s3(w: &World) -> aws_sdk_s3::Client {
    let AwsDouble::Moto(m) = &w.aws else {
        panic!("these tests run against moto")
    };
    let conf = aws_sdk_s3::config::Builder::from(m.config())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A moto world with the state bucket.
fn world() -> Option<World> {
    let w = World::moto(1)?;
    let client = s3(&w);
    w.rt.block_on(client.create_bucket().bucket(BUCKET).send())
        .unwrap_or_else(|e| panic!("create bucket: {e:?}"));
    Some(w)
}

/// Every object of the state: (key, bytes).
fn objects(w: &World) -> Vec<(String, Vec<u8>)> {
    let client = s3(w);
    w.rt.block_on(async {
        let list = client
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list: {e:?}"));
        let mut out = Vec::new();
        for o in list.contents() {
            let key = o.key().unwrap_or_default().to_string();
            let got = client.get_object().bucket(BUCKET).key(&key).send().await;
            if let Ok(got) = got {
                let bytes = got
                    .body
                    .collect()
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                out.push((key, bytes));
            }
        }
        out
    })
}

fn lock_holder_pid(w: &World) -> Option<u32> {
    let client = s3(w);
    let got =
        w.rt.block_on(
            client
                .get_object()
                .bucket(BUCKET)
                .key("team/prod/lock.json")
                .send(),
        )
        .ok()?;
    let bytes = w.rt.block_on(got.body.collect()).ok()?.to_vec();
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["pid"].as_u64().map(|p| p as u32)
}

struct Running {
    child: Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Starts `rekey ARGS` in `cwd` with the world's environment plus `env`.
fn spawn(w: &World, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Running {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = w.path(&format!("s3-{n}.stdout"));
    let err = w.path(&format!("s3-{n}.stderr"));
    let mut c = w.command();
    c.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap_or_else(|e| panic!("{e}")))
        .stderr(std::fs::File::create(&err).unwrap_or_else(|e| panic!("{e}")));
    for (k, v) in env {
        c.env(k, v);
    }
    Running {
        child: c.spawn().unwrap_or_else(|e| panic!("start rekey: {e}")),
        out,
        err,
    }
}

impl Running {
    fn wait(mut self) -> Ended {
        let began = Instant::now();
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if began.elapsed() > Duration::from_secs(120) {
                let _ = self.child.kill();
                panic!("rekey did not finish in 120 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ended {
            code: status.code(),
            stdout: std::fs::read_to_string(&self.out).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err).unwrap_or_default(),
        }
    }
}

fn apply_args<'a>(plan: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "apply",
        plan,
        "--state",
        STATE,
        "--verify-backoff-ms",
        "50",
        "--poll-interval-ms",
        "50",
        "--output",
        "json",
    ];
    args.extend_from_slice(extra);
    args
}

/// `rekey status` of the S3 state: (run status, target state) of the newest run.
fn s3_status(w: &World) -> (String, String) {
    let inv = w.run(&["status", "--state", STATE, "--output", "json"], &[]);
    inv.expect_code(0, "status of the S3 state");
    let v: serde_json::Value = serde_json::from_str(&inv.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", inv.stdout));
    (
        v["runs"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v["targets"][0]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

/// The invariants after a rotation away from `old` (id, secret): those at the owners
/// ([`assert_rotated_at_owners`]), and the run complete with the target done.
fn assert_rotated_from(w: &World, old: &(String, String), outputs: &[String]) -> (String, String) {
    let new = assert_rotated_at_owners(w, old, outputs);
    assert_eq!(s3_status(w), ("complete".into(), "done".into()));
    new
}

/// The invariants at the owners after a rotation away from `old` (id, secret): every binding
/// holds one new key, it authenticates, it is the user's only key (no orphan), the old key is
/// refused, and no secret reached S3 in any spelling or the outputs.
fn assert_rotated_at_owners(
    w: &World,
    old: &(String, String),
    outputs: &[String],
) -> (String, String) {
    use base64::Engine as _;
    let bound = w.bound();
    let (_, new_id, new_secret) = bound[0].clone();
    for (place, id, secret) in &bound {
        assert_eq!(id, &new_id, "{place} holds another key");
        assert_eq!(secret, &new_secret, "{place} holds another secret");
    }
    assert_ne!(new_id, old.0, "the bindings still hold the old key");
    assert!(w.works(&new_id, &new_secret), "the bound key does not work");
    let keys: Vec<String> = w.keys().into_iter().map(|k| k.id).collect();
    assert_eq!(
        keys,
        vec![new_id.clone()],
        "orphans or the old key remain at IAM"
    );
    assert!(
        w.caller_arn(&old.0, &old.1).is_err(),
        "the old key still works"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(&new_secret);
    for (key, bytes) in objects(w) {
        for needle in [&new_secret, &old.1, &b64] {
            assert!(
                support::world::find_bytes(&bytes, needle.as_bytes()).is_none(),
                "a secret in S3 object {key}"
            );
        }
    }
    for text in outputs {
        assert!(
            !text.contains(&new_secret) && !text.contains(&old.1),
            "a secret in an output"
        );
    }
    (new_id, new_secret)
}

/// moto's S3 enforces `If-None-Match: *` and `If-Match` (rekey's lock and journal rely on
/// them): if a moto upgrade stops doing so, this fails before anything subtler does.
#[test]
fn moto_enforces_conditional_writes() {
    let Some(w) = world() else { return };
    let c = s3(&w);
    w.rt.block_on(async {
        let put = |body: &'static str| {
            c.put_object().bucket(BUCKET).key("k").body(
                aws_sdk_s3::primitives::ByteStream::from_static(body.as_bytes()),
            )
        };
        let first = put("a").if_none_match("*").send().await.expect("create");
        let again = put("b").if_none_match("*").send().await;
        assert_eq!(
            again
                .err()
                .and_then(|e| e.raw_response().map(|r| r.status().as_u16())),
            Some(412),
            "If-None-Match: * on an existing key"
        );
        let stale = put("c").if_match("\"not-the-etag\"").send().await;
        assert_eq!(
            stale
                .err()
                .and_then(|e| e.raw_response().map(|r| r.status().as_u16())),
            Some(412),
            "If-Match with another ETag"
        );
        let etag = first.e_tag().expect("an ETag").to_string();
        put("d")
            .if_match(&etag)
            .send()
            .await
            .expect("If-Match with the ETag");
        let reuse = put("e").if_match(&etag).send().await;
        assert!(reuse.is_err(), "an ETag used twice");
    });
}

/// Two `rekey apply` started together on one plan and one S3 state: exactly one rotates, the
/// other exits 5 ("locked") naming the holder, and the credential is minted once.
#[test]
fn two_applies_at_once_one_rotates_and_the_other_exits_locked() {
    let Some(w) = world() else { return };
    let old = w.old_key.clone();
    let plan = w.write_plan(&PlanSpec::default()).display().to_string();
    let a = spawn(&w, &apply_args(&plan, &[]), &[], w.dir.path());
    let b = spawn(&w, &apply_args(&plan, &[]), &[], w.dir.path());
    let (a, b) = (a.wait(), b.wait());
    let mut codes = [a.code, b.code];
    codes.sort();
    assert_eq!(
        codes,
        [Some(0), Some(LOCKED)],
        "one rotates, one is locked out\n--- a\n{}\n--- b\n{}",
        a.stderr,
        b.stderr
    );
    let loser = if a.code == Some(LOCKED) { &a } else { &b };
    assert!(
        loser.stderr.contains("is locked by rekey on")
            && loser.stderr.contains("nothing was changed"),
        "{}",
        loser.stderr
    );
    assert_eq!(w.keys_created(), 1, "one mint at IAM");
    assert_rotated_from(&w, &old, &[a.stdout, a.stderr, b.stdout, b.stderr]);
    assert!(
        !objects(&w).iter().any(|(k, _)| k.ends_with("lock.json")),
        "the winner released the lock"
    );
}

/// The protocol's steps in the order a run journals them: a record's place in the protocol is
/// its step's index, intent before done.
const PROTOCOL: [&str; 13] = [
    "inspect",
    "pre-hunt",
    "capacity",
    "mint",
    "verify",
    "write",
    "read-back",
    "canary",
    "deactivate",
    "grace",
    "post-hunt",
    "revoke",
    "done",
];

/// Where `step:phase` stands in [`PROTOCOL`] (`none`, before any record, is 0).
fn protocol_point(record: &str) -> usize {
    let (step, phase) = record.split_once(':').unwrap_or((record, ""));
    PROTOCOL
        .iter()
        .position(|s| *s == step)
        .map_or(0, |i| 1 + 2 * i + usize::from(phase != "intent"))
}

/// The kill points, taken in turn: the holder is killed as soon as S3 shows a record at or past
/// the point (`none`: as soon as it holds the lease, before any record).
const KILL_AT: [&str; 6] = [
    "none",
    "mint:intent",
    "write:intent",
    "write:done",
    "deactivate:intent",
    "revoke:intent",
];

/// The journal batches that appear in S3: each poll fetches only the batches it has not seen
/// (a batch is written once, under a key of its own), so watching a run stays cheap.
#[derive(Default)]
struct NewRecords {
    seen: std::collections::HashSet<String>,
}

impl NewRecords {
    /// The records of batches written since the last poll, as `step:phase`.
    fn poll(&mut self, w: &World) -> Vec<String> {
        let client = s3(w);
        w.rt.block_on(async {
            let Ok(list) = client.list_objects_v2().bucket(BUCKET).send().await else {
                return Vec::new();
            };
            let mut out = Vec::new();
            for o in list.contents() {
                let key = o.key().unwrap_or_default();
                if !key.contains("/events/") || !self.seen.insert(key.to_string()) {
                    continue;
                }
                let Ok(got) = client.get_object().bucket(BUCKET).key(key).send().await else {
                    self.seen.remove(key);
                    continue;
                };
                let bytes = got.body.collect().await.map(|b| b.to_vec());
                let batch: serde_json::Value =
                    serde_json::from_slice(&bytes.unwrap_or_default()).unwrap_or_default();
                for record in batch["records"].as_array().into_iter().flatten() {
                    out.push(format!(
                        "{}:{}",
                        record["step"].as_str().unwrap_or(""),
                        record["phase"].as_str().unwrap_or("")
                    ));
                }
            }
            out
        })
    }
}

/// Holders SIGKILLed at each point of the protocol in turn (before any record, after the mint
/// intent, the write intent, the write, the deactivation intent, the revocation intent: the
/// moment S3 shows it), at least 20 kills, each successor in a fresh working directory taking
/// the expired lease over: every round ends rotated, with the invariants at the owners, and a
/// last apply changes nothing. Kills follow the records, not the clock: random moments cluster
/// where the protocol spends its time and miss the short steps.
#[test]
fn holders_killed_at_every_point_of_the_protocol_are_taken_over_and_the_rotation_completes() {
    let Some(w) = world() else { return };
    // A WAN round trip at CircleCI widens the write step's window, so polling sees it.
    w.circleci.set_latency(Duration::from_millis(60));
    let mut watch = NewRecords::default();
    let mut old = w.old_key.clone();
    let mut kills = 0;
    let mut round = 0;
    let mut outputs = Vec::new();
    // The last record in S3 at each kill: where in the protocol the kills landed.
    let mut reached = std::collections::BTreeSet::new();
    while kills < 20 {
        round += 1;
        // A new plan text per round: a new run that rotates the key the last round bound.
        let spec = PlanSpec {
            sections: format!("# round {round}\n"),
            ..Default::default()
        };
        let plan = w.write_plan(&spec).display().to_string();
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 60, "round {round} never completed");
            let cwd = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
            // Rounds after the first rotate again what an earlier run of rekey minted.
            let mut extra = vec!["--lock-lease", "2s", "--lock-timeout", "30s"];
            if round > 1 {
                extra.push("--ignore-max-age");
            }
            watch.poll(&w);
            let kill_at = protocol_point(KILL_AT[kills % KILL_AT.len()]);
            let run = spawn(&w, &apply_args(&plan, &extra), &[], cwd.path());
            let pid = run.child.id();
            let mut running = run;
            let began = Instant::now();
            // Until it ends, or holds the lease and S3 shows a record at or past the point.
            let due = loop {
                if let Ok(Some(_)) = running.child.try_wait() {
                    break false;
                }
                let new = watch.poll(&w);
                let past = new.iter().any(|r| protocol_point(r) >= kill_at);
                if (kill_at == 0 || past) && lock_holder_pid(&w) == Some(pid) {
                    break true;
                }
                assert!(
                    began.elapsed() < Duration::from_secs(60),
                    "rekey neither ended nor reached {}",
                    KILL_AT[kills % KILL_AT.len()]
                );
                std::thread::sleep(Duration::from_millis(5));
            };
            if due && kills < 20 && running.child.try_wait().ok().flatten().is_none() {
                // Our own child, by its handle: SIGKILL.
                let _ = running.child.kill();
                let _ = running.child.wait();
                kills += 1;
                reached.insert(last_record(&w));
                continue;
            }
            let ended = running.wait();
            outputs.push(ended.stdout.clone());
            outputs.push(ended.stderr.clone());
            if ended.code == Some(0) {
                break;
            }
            assert_eq!(
                ended.code,
                Some(4),
                "only 'incomplete' may follow a kill: {}",
                ended.stderr
            );
        }
        let new = assert_rotated_at_owners(&w, &old, &outputs);
        assert_run_complete_after_kills(&w);
        old = new;
    }
    // Idempotent: the last plan applied again changes nothing at the owners.
    w.clear_request_logs();
    let spec = PlanSpec {
        sections: format!("# round {round}\n"),
        ..Default::default()
    };
    let plan = w.write_plan(&spec).display().to_string();
    let again = spawn(&w, &apply_args(&plan, &[]), &[], w.dir.path()).wait();
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(w.keys_created(), 0, "a completed plan minted again");
    assert!(
        w.circleci_mutations().is_empty(),
        "a completed plan wrote to CircleCI"
    );
    eprintln!("{kills} kills over {round} rounds; last records at the kills: {reached:?}");
    // Records reach S3 in batches, one per wait before a side effect, so a kill finds one of
    // a few last records there: none, the mint intent, the write intents, the deactivation
    // and revocation intents, done. Kills triggered by them reach at least four.
    assert!(
        reached.len() >= 4,
        "the kills landed at too few points of the protocol: {reached:?}"
    );
}

/// The newest run is complete with the target done; or, when a holder was killed after its
/// run completed but before it released the lease, its successor's run of the same plan found
/// the target rotated (skipped) and the run before it is the complete one.
fn assert_run_complete_after_kills(w: &World) {
    let inv = w.run(&["status", "--state", STATE, "--output", "json"], &[]);
    inv.expect_code(0, "status of the S3 state");
    let v: serde_json::Value = serde_json::from_str(&inv.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", inv.stdout));
    let run = |i: usize| v["runs"][i]["status"].as_str().unwrap_or_default();
    let target = v["targets"][0]["state"].as_str().unwrap_or_default();
    assert_eq!(run(0), "complete", "{}", inv.stdout);
    assert!(
        target == "done" || (target == "skipped" && run(1) == "complete"),
        "the newest run's target is {target}: {}",
        inv.stdout
    );
}

/// The journal records in S3, in key order (batch by batch, each batch's records in order),
/// each with the key of its batch.
fn records(w: &World) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for (key, bytes) in objects(w) {
        if !key.contains("/events/") {
            continue;
        }
        let batch: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        for record in batch["records"].as_array().into_iter().flatten() {
            out.push((key.clone(), record.clone()));
        }
    }
    out
}

/// `step:phase` of the newest record in S3 (by time), or `none`.
fn last_record(w: &World) -> String {
    records(w)
        .into_iter()
        .map(|(_, v)| v)
        .max_by_key(|v| v["at"].as_str().unwrap_or_default().to_string())
        .map(|v| {
            format!(
                "{}:{}",
                v["step"].as_str().unwrap_or(""),
                v["phase"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_else(|| "none".into())
}

/// A lease held (and renewed) for several times its length is never taken over: every apply
/// meanwhile exits "locked" and changes nothing; once released, an apply rotates.
#[test]
fn a_renewed_lease_is_never_taken_over() {
    let Some(w) = world() else { return };
    let AwsDouble::Moto(m) = &w.aws else { return };
    let rekey::engine::state::StateLocation::S3(location) =
        rekey::engine::state::StateLocation::of(Path::new(STATE)).expect("location")
    else {
        panic!("not S3")
    };
    rekey::engine::state::s3::configure(&location, m.config()).expect("configure");
    let lock = rekey::engine::lock::StateLock::acquire_with(
        Path::new(STATE),
        rekey::engine::state::lease::LeaseOptions {
            lease: Duration::from_secs(2),
            timeout: Duration::ZERO,
        },
    )
    .unwrap_or_else(|e| panic!("lock: {e}"));
    lock.set_run("r20261204-210000-abcd");
    let plan = w.write_plan(&PlanSpec::default()).display().to_string();
    w.clear_request_logs();
    let began = Instant::now();
    let mut refused = 0;
    while began.elapsed() < Duration::from_secs(7) {
        let out = spawn(
            &w,
            &apply_args(&plan, &["--lock-lease", "2s"]),
            &[],
            w.dir.path(),
        )
        .wait();
        assert_eq!(out.code, Some(LOCKED), "{}", out.stderr);
        assert!(
            out.stderr.contains("r20261204-210000-abcd"),
            "{}",
            out.stderr
        );
        refused += 1;
        std::thread::sleep(Duration::from_millis(700));
    }
    assert!(refused >= 3, "{refused} attempts");
    assert_eq!(w.keys_created(), 0);
    assert!(w.circleci_mutations().is_empty());
    drop(lock);
    let out = spawn(&w, &apply_args(&plan, &[]), &[], w.dir.path()).wait();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_rotated_from(&w, &w.old_key.clone(), &[out.stdout, out.stderr]);
}

/// S3 refusing the mint's intent record (503 SlowDown, every time): the mint never happens and
/// nothing is written to CircleCI; the run is resumable once S3 is back.
/// Applies the default plan with every S3 PUT that `refuse` picks answered 503 SlowDown (after
/// the SDK's and rekey's retries: refused): the run must fail, and the fault was injected.
/// Returns the proxy, the plan and the failed run.
fn apply_with_puts_refused(
    w: &World,
    refuse: impl Fn(&support::s3proxy::Seen) -> bool + Send + 'static,
) -> (S3Proxy, String, Ended) {
    let proxy = S3Proxy::start(&w.endpoint());
    proxy.set_rule(move |seen| {
        if seen.method == "PUT" && refuse(seen) {
            Fault::SlowDown
        } else {
            Fault::Pass
        }
    });
    let env = [("AWS_ENDPOINT_URL_S3", proxy.url.as_str())];
    let plan = w.write_plan(&PlanSpec::default()).display().to_string();
    w.clear_request_logs();
    let out = spawn(w, &apply_args(&plan, &[]), &env, w.dir.path()).wait();
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert!(
        proxy.seen().iter().any(|s| s.fault == Fault::SlowDown),
        "the fault was injected"
    );
    (proxy, plan, out)
}

/// S3 is back: the same plan continues the run and completes it.
fn resume_once_s3_is_back(w: &World, proxy: &S3Proxy, plan: &str, failed: Ended) {
    proxy.set_rule(|_| Fault::Pass);
    let env = [("AWS_ENDPOINT_URL_S3", proxy.url.as_str())];
    let old = w.old_key.clone();
    let again = spawn(w, &apply_args(plan, &[]), &env, w.dir.path()).wait();
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_rotated_from(w, &old, &[failed.stderr, again.stdout, again.stderr]);
}

/// The target's records in S3 as `step:phase`, in order.
fn steps_in_s3(w: &World) -> Vec<String> {
    records(w)
        .iter()
        .map(|(_, v)| {
            format!(
                "{}:{}",
                v["step"].as_str().unwrap_or(""),
                v["phase"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[test]
fn no_mint_without_its_record_when_s3_refuses_it() {
    let Some(w) = world() else { return };
    let (proxy, plan, out) = apply_with_puts_refused(&w, |seen| {
        let body = String::from_utf8_lossy(&seen.body);
        body.contains("\"step\":\"mint\"") && body.contains("\"phase\":\"intent\"")
    });
    assert_eq!(w.keys_created(), 0, "minted without its intent in S3");
    assert!(w.circleci_mutations().is_empty(), "CircleCI written");
    resume_once_s3_is_back(&w, &proxy, &plan, out);
}

/// The sealed value is queued on the target's write chain without waiting (DESIGN.md, "Shared
/// state"): S3 refusing it must still stop the run before any CircleCI write, and before S3
/// shows the mint done without its stash. With S3 back, resume treats the mint as interrupted
/// (the minted key, whose value nobody kept, is deleted at IAM), mints again and completes.
#[test]
fn no_write_without_its_sealed_value_in_s3_when_s3_refuses_the_stash() {
    let Some(w) = world() else { return };
    let (proxy, plan, out) = apply_with_puts_refused(&w, |seen| seen.path.contains("/stash/"));
    assert_eq!(w.keys_created(), 1, "{}", out.stderr);
    assert!(
        w.circleci_mutations().is_empty(),
        "CircleCI written without the sealed value in S3"
    );
    let steps = steps_in_s3(&w);
    assert!(steps.iter().any(|s| s == "mint:intent"), "{steps:?}");
    assert!(
        !steps
            .iter()
            .any(|s| s == "mint:done" || s == "write:intent"),
        "S3 shows the mint done without its stash: {steps:?}"
    );
    resume_once_s3_is_back(&w, &proxy, &plan, out);
    assert_eq!(
        w.keys_created(),
        2,
        "the interrupted mint was not minted again"
    );
}

/// S3 answering 503 SlowDown to the first attempt of every write and dropping the answer of
/// every third write it applied: the rotation completes, and every record is in S3 exactly
/// once, in order (no gap, no step without its record).
#[test]
fn slowdowns_and_dropped_answers_lose_no_record() {
    let Some(w) = world() else { return };
    let proxy = S3Proxy::start(&w.endpoint());
    let mut tries = std::collections::HashMap::<String, u32>::new();
    let mut writes = 0u32;
    proxy.set_rule(move |seen| {
        if seen.method != "PUT" {
            return Fault::Pass;
        }
        let n = tries.entry(seen.path.clone()).or_insert(0);
        *n += 1;
        if *n == 1 {
            return Fault::SlowDown;
        }
        writes += 1;
        if writes.is_multiple_of(3) {
            Fault::DropAnswer
        } else {
            Fault::Pass
        }
    });
    let env = [("AWS_ENDPOINT_URL_S3", proxy.url.as_str())];
    let old = w.old_key.clone();
    let plan = w.write_plan(&PlanSpec::default()).display().to_string();
    let out = spawn(&w, &apply_args(&plan, &[]), &env, w.dir.path()).wait();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let seen = proxy.seen();
    assert!(seen.iter().any(|s| s.fault == Fault::DropAnswer));
    assert!(seen.iter().any(|s| s.fault == Fault::SlowDown));
    assert_eq!(w.keys_created(), 1);
    assert_rotated_from(&w, &old, &[out.stdout, out.stderr]);
    // The records of the target: numbered 1..=n without a gap, the protocol's steps in order.
    let events = records(&w);
    for (i, (key, v)) in events.iter().enumerate() {
        assert_eq!(v["seq"].as_i64(), Some(i as i64 + 1), "{key}");
    }
    let steps = steps_in_s3(&w);
    for needed in [
        "mint:intent",
        "mint:done",
        "write:intent",
        "deactivate:intent",
        "revoke:intent",
        "revoke:done",
        "done:done",
    ] {
        assert!(
            steps.iter().any(|s| s == needed),
            "{needed} missing from {steps:?}"
        );
    }
    let pos = |s: &str| steps.iter().position(|x| x == s).unwrap_or(usize::MAX);
    assert!(
        pos("mint:intent") < pos("write:intent") && pos("write:intent") < pos("deactivate:intent")
    );
}

/// `apply --dry-run` against S3 state reads it (an earlier run is recognised) and sends no
/// write to S3 at all: no PUT, no DELETE, no POST, in the proxy's log.
#[test]
fn a_dry_run_on_s3_state_writes_nothing_to_s3() {
    let Some(w) = world() else { return };
    let plan = w.write_plan(&PlanSpec::default()).display().to_string();
    let out = spawn(&w, &apply_args(&plan, &[]), &[], w.dir.path()).wait();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let proxy = S3Proxy::start(&w.endpoint());
    let env = [("AWS_ENDPOINT_URL_S3", proxy.url.as_str())];
    let before = objects(&w);
    let dry = spawn(&w, &apply_args(&plan, &["--dry-run"]), &env, w.dir.path()).wait();
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "the dry run read the S3 state");
    let writes: Vec<String> = seen
        .iter()
        .filter(|s| s.method != "GET" && s.method != "HEAD")
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        writes,
        Vec::<String>::new(),
        "writes to S3 during a dry run"
    );
    assert_eq!(objects(&w), before);
}

/// A local state moved to S3 resumes there (an interrupted run finished from S3 alone, in
/// another working directory), and `state list/show` read it; `state unlock` refuses a lease
/// of another run and removes the right one.
#[test]
fn migrate_list_show_and_unlock() {
    let Some(w) = world() else { return };
    let old = w.old_key.clone();
    let plan = w.write_plan(&PlanSpec::default()).display().to_string();
    let local = w.state_dir().display().to_string();
    // Interrupted locally after the write (a stash entry and a half-done run).
    let crashed = w.run(
        &[
            "apply",
            &plan,
            "--state-dir",
            &local,
            "--verify-backoff-ms",
            "50",
        ],
        &[("REKEY_CRASH_AT", "aws-ci-deployer:deactivate:intent")],
    );
    assert_ne!(crashed.code, Some(0));
    let moved = w.run(
        &[
            "state", "migrate", "--from", &local, "--to", STATE, "--output", "json",
        ],
        &[],
    );
    moved.expect_code(0, "migrate");
    let v: serde_json::Value = serde_json::from_str(&moved.stdout).unwrap_or_default();
    assert_eq!(v["runs"], 1);
    assert_eq!(v["stashed"], 1, "{v}");
    let list = w.run(
        &["state", "list", "--state", STATE, "--output", "json"],
        &[],
    );
    list.expect_code(0, "list");
    let runs: serde_json::Value = serde_json::from_str(&list.stdout).unwrap_or_default();
    let run = runs["runs"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!run.is_empty(), "{}", list.stdout);
    let show = w.run(&["state", "show", &run, "--state", STATE], &[]);
    show.expect_code(0, "show");
    assert!(show.stdout.contains("deactivate intent"), "{}", show.stdout);
    // Finished from S3 alone, elsewhere.
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = spawn(&w, &apply_args(&plan, &[]), &[], elsewhere.path()).wait();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_rotated_from(
        &w,
        &old,
        &[out.stdout, out.stderr, moved.stdout, show.stdout],
    );
    // A stuck lease: refused for another run, removed for its own.
    let c = s3(&w);
    let lease = serde_json::json!({"host": "gone", "pid": 1, "run": run, "ci_job": null,
        "since": "2026-12-04T00:00:00Z", "expires": "2099-01-01T00:00:00Z", "token": "t"});
    w.rt.block_on(
        c.put_object()
            .bucket(BUCKET)
            .key("team/prod/lock.json")
            .body(aws_sdk_s3::primitives::ByteStream::from(
                lease.to_string().into_bytes(),
            ))
            .send(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let wrong = w.run(
        &[
            "state",
            "unlock",
            "r20261204-000000-0000",
            "--state",
            STATE,
            "--yes",
        ],
        &[],
    );
    assert_ne!(wrong.code, Some(0));
    assert!(
        lock_holder_pid(&w).is_some(),
        "a lease of another run was removed"
    );
    let locked = spawn(&w, &apply_args(&plan, &[]), &[], w.dir.path()).wait();
    assert_eq!(locked.code, Some(LOCKED), "{}", locked.stderr);
    let right = w.run(&["state", "unlock", &run, "--state", STATE, "--yes"], &[]);
    right.expect_code(0, "unlock");
    assert!(lock_holder_pid(&w).is_none());
    let _ = USER;
}
