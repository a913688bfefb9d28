//! Athena hunting costs on this machine, without Athena:
//!
//! 1. compiling the rules to SQL — the built-in pack plus every SigmaHQ CloudTrail rule — into
//!    the filter of an unscoped query, and planning a scoped hunt's two queries;
//! 2. turning 1,000,000 result rows (as GetQueryResults gives them: one text cell per column
//!    the query selects) into records and findings, against reading the same records from
//!    JSON-lines files.
//!
//! The rows are the Invictus dataset's records, each as the CloudTrail table's columns, cycled
//! with a distinct eventID per row; each row holds the columns the plan's SQL selects (those
//! the rules and attribution read: `query::Plan::projection`), as Athena answers that SQL. The
//! rows path does what `athena::client` does with a page:
//! its input is GetQueryResults' answers as the SDK hands them over (pages of 1,000 rows, each a
//! `ResultSet` of `Row`s of `Datum`s, an owned string per cell), built before the clock starts
//! as the files are written before it starts, on the fetching thread as the SDK builds them on
//! the thread that receives them (the time to build them, which stands for the SDK's parsing
//! of the responses, is printed apart). On the fetching thread each answer is
//! consumed by value into a page (`Rows::from_answer`: the cells in one buffer); the workers
//! read each row's fields directly (`athena::rows`) and hunt them. The files path reads the
//! same records, written beforehand as JSON lines (each record whole: every column). Same
//! rules, same threads, same records.
//!
//! Each side's wall time and CPU time (every thread's, the fetcher's included) are printed:
//! the CPU ratio says what each side costs, the wall ratio how well it uses the cores.
//!
//! `cargo bench --bench athena` (REKEY_BENCH_ROWS=1000000; REKEY_BENCH_RUNS=3).

use aws_sdk_athena::types::ResultSet;
use rekey::hunt::athena::columns::{COLUMNS, Kind};
use rekey::hunt::athena::rows::{self, Projection, Rows, Shape};
use rekey::hunt::athena::{Table, query};
use rekey::hunt::engine::{self, HuntOptions, PageFeed};
use rekey::hunt::pack::RuleSet;
use rekey::hunt::remote::{Body, Page};
use rekey::hunt::source::Source;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// The binary's allocator, so that what is measured in process is what `rekey` does.
#[global_allocator]
static ALLOCATOR: rekey::Allocator = rekey::Allocator;

const ROWS_PER_PAGE: usize = 1000;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dataset = root.join("../shared/datasets/cloudtrail-invictus");
    let sigma = root.join("../shared/datasets/sigma-aws-cloudtrail");
    if !dataset.is_dir() || !sigma.is_dir() {
        eprintln!(
            "SKIPPED: {} or {} is absent",
            dataset.display(),
            sigma.display()
        );
        return;
    }
    let total: usize = env("REKEY_BENCH_ROWS", 1_000_000);
    let runs: usize = env("REKEY_BENCH_RUNS", 3);
    let mut rules = RuleSet::builtin();
    rules.add_path(&sigma).expect("SigmaHQ rules");
    let n_rules = rules.for_source(Source::Cloudtrail).count();

    // 1. Compilation.
    let reps = 20;
    let mut times = Vec::new();
    let mut sql_len = 0;
    for _ in 0..reps {
        let t = Instant::now();
        let (filter, _) = query::rules_filter(&rules);
        times.push(t.elapsed());
        sql_len = filter.len();
    }
    let table = Table::parse_name("security.cloudtrail_logs").expect("table");
    let t0 = "2023-07-01T00:00:00Z".parse().expect("time");
    let t1 = "2023-07-10T12:00:00Z".parse().expect("time");
    let t2 = "2023-07-11T00:00:00Z".parse().expect("time");
    let tp = Instant::now();
    let plan = query::plan(&table, &rules, &[], t0, t1, t2).expect("plan");
    let plan_time = tp.elapsed();
    println!(
        "compile: {n_rules} CloudTrail rules to SQL in {} (median of {reps}; min {}), filter {} KB; unscoped plan of {} queries in {}",
        ms(median(&mut times)),
        ms(times[0]),
        sql_len / 1000,
        plan.queries.len(),
        ms(plan_time)
    );

    // 2. Rows to findings, against files.
    let base = base_rows(&dataset);
    let shape = Shape::cloudtrail();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut bytes = 0u64;
    let every: Vec<usize> = (0..COLUMNS.len()).collect();
    for (n, answer) in pages(&base, total, &every).enumerate() {
        let mut page = Vec::with_capacity(ROWS_PER_PAGE * 1500);
        for row in answer.rows() {
            let cells: Vec<Option<&str>> = row.data().iter().map(|d| d.var_char_value()).collect();
            shape.write_record(&cells, &mut page);
        }
        bytes += page.len() as u64;
        std::fs::write(tmp.path().join(format!("page{n:05}.json")), page).expect("write");
    }
    // What the hunt's queries select (the same for every query of a rule set).
    let projection = plan.projection.clone();
    println!(
        "rows: {total} rows from {} distinct records, {:.0} MB as JSON lines; the queries select {} of the table's {} columns",
        base.len(),
        bytes as f64 / 1e6,
        projection.columns().len(),
        COLUMNS.len()
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for threads in [1, cores] {
        let opts = HuntOptions {
            inputs: vec![(Source::Cloudtrail, tmp.path().to_path_buf())],
            since: t1,
            threads,
            ..Default::default()
        };
        let mut files = Vec::new();
        let mut via_rows = Vec::new();
        let mut building = Vec::new();
        let (mut f_found, mut r_found) = (0, 0);
        let (mut f_cpu, mut r_cpu) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (t, c) = (Instant::now(), cpu());
            let r = engine::run(&rules, &opts);
            files.push(t.elapsed());
            f_cpu.push(cpu() - c);
            f_found = r.findings.len();
            let (r, built, took, cpu_took) = hunt_rows(&rules, &opts, &projection, &base, total);
            building.push(built);
            via_rows.push(took);
            r_cpu.push(cpu_took);
            r_found = r.findings.len();
        }
        assert_eq!(f_found, r_found, "the same findings both ways");
        let (f, r) = (median(&mut files), median(&mut via_rows));
        let (fc, rc) = (median(&mut f_cpu), median(&mut r_cpu));
        println!(
            "{threads} worker(s): files {} ({:.0} rows/s, {} CPU), rows {} ({:.0} rows/s, {} CPU); rows/files time {:.2}, CPU {:.2} (medians of {runs}); {f_found} findings; the answers built in {} (untimed)",
            ms(f),
            total as f64 / f.as_secs_f64(),
            ms(fc),
            ms(r),
            total as f64 / r.as_secs_f64(),
            ms(rc),
            r.as_secs_f64() / f.as_secs_f64(),
            rc.as_secs_f64() / fc.as_secs_f64(),
            ms(median(&mut building))
        );
    }
}

/// CPU time this process has used (user and system, every thread): what a side costs, which
/// a loaded machine does not change as it changes wall time.
fn cpu() -> Duration {
    // SAFETY: getrusage writes only into the struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The dataset's records as table rows: one text cell per column of [`COLUMNS`], as
/// GetQueryResults gives them.
fn base_rows(dir: &Path) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dataset")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for f in files {
        let doc: Value = serde_json::from_slice(&std::fs::read(f).expect("read")).expect("json");
        for r in doc["Records"].as_array().into_iter().flatten() {
            out.push(COLUMNS.iter().map(|c| cell(r, c.path, c.kind)).collect());
        }
    }
    out
}

fn cell(record: &Value, path: &str, kind: Kind) -> Option<String> {
    let v = path.split('.').try_fold(record, |v, k| v.get(k))?;
    match (kind, v) {
        (_, Value::Null) => None,
        (Kind::Text, Value::String(s)) => Some(s.clone()),
        (Kind::Resources, v) => Some(lowercase_keys(v.clone()).to_string()),
        (_, v) => Some(match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
    }
}

fn lowercase_keys(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), lowercase_keys(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(lowercase_keys).collect()),
        other => other,
    }
}

/// The rows' pages, as the SDK hands GetQueryResults' answers over to a query selecting
/// `columns` (indices in [`COLUMNS`]): row `i` is base row `i % n` with its own eventID.
fn pages<'a>(
    base: &'a [Vec<Option<String>>],
    total: usize,
    columns: &'a [usize],
) -> impl Iterator<Item = ResultSet> + 'a {
    let id_col = COLUMNS
        .iter()
        .position(|c| c.path == "eventID")
        .expect("eventID column");
    (0..total.div_ceil(ROWS_PER_PAGE)).map(move |p| {
        rows::answer(
            (p * ROWS_PER_PAGE..((p + 1) * ROWS_PER_PAGE).min(total)).map(|i| {
                let row = &base[i % base.len()];
                columns.iter().map(move |&c| {
                    let mut cell = row[c].clone();
                    if let (true, Some(id)) = (c == id_col, &mut cell) {
                        id.push_str(&format!("-{}", i / base.len()));
                    }
                    cell
                })
            }),
        )
    })
}

/// The rows path: the answers made into pages on one thread (the fetcher's), read and hunted
/// by the workers. The fetching thread builds its answers before the clock starts, as the SDK
/// allocates each answer on the thread that receives it: the strings it frees while it makes
/// pages go back to its own heap, as in the client (built on another thread, they went to that
/// thread's heap, which then spent ~1.5 s per 1,000,000 rows coalescing them on its next
/// large allocation — a cost of the bench's set-up, not of the client). Returns the report,
/// the time the answers took to build (untimed) and the time from the start of the first
/// conversion to the end of the hunt, fetcher joined, and the CPU time spent in it.
fn hunt_rows(
    rules: &RuleSet,
    opts: &HuntOptions,
    projection: &Projection,
    base: &[Vec<Option<String>>],
    total: usize,
) -> (
    rekey::hunt::findings::HuntReport,
    Duration,
    Duration,
    Duration,
) {
    let mut opts = opts.clone();
    opts.inputs.clear();
    let (tx, rx) = tokio::sync::mpsc::channel(
        std::env::var("DEPTH")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(8),
    );
    let feed: PageFeed = std::sync::Mutex::new(rx);
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let mut clock = None;
    let report = std::thread::scope(|s| {
        s.spawn(move || {
            let t = Instant::now();
            let answers: Vec<ResultSet> = pages(base, total, projection.columns()).collect();
            let _ = ready_tx.send(t.elapsed());
            if go_rx.recv().is_err() {
                return;
            }
            for (n, answer) in answers.into_iter().enumerate() {
                let rows =
                    Rows::from_answer(answer, projection, n == 0).expect("one cell per column");
                let page = Page {
                    source: Source::Cloudtrail,
                    name: format!("athena:security.cloudtrail_logs window query q page {n}"),
                    body: Body::Rows(rows),
                };
                if tx.blocking_send(page).is_err() {
                    return;
                }
            }
        });
        let built = ready.recv().expect("the answers are built");
        let t = Instant::now();
        clock = Some((built, t, cpu()));
        go.send(()).expect("the fetcher waits");
        engine::run_with_pages(rules, &opts, Some(&feed))
    });
    let (built, t, c) = clock.expect("the clock started");
    (report, built, t.elapsed(), cpu() - c)
}
