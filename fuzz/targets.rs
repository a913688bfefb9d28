//! The fuzz targets: every parser of outside input, each with its seeds (the repository's
//! fixtures and example plans, the shared datasets when present) and a dictionary of its
//! language's tokens. A target returns whether the input was accepted (accepted inputs become
//! parents of later ones).

use rekey::hunt::fields::Fields;
use rekey::hunt::pack::RuleSet;
use rekey::hunt::sigma::{self, Prefilter};
use rekey::hunt::source::{self, FieldSets, Loc, Problem, Sink, Source};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub dict: &'static [&'static str],
    pub run: fn(&[u8]) -> bool,
}

const JSON: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "null",
    "true",
    "false",
    "\\u0000",
    "\\ud800",
    "\\\"",
    "1e308",
    "-",
    "{\"\":",
    "[[[[",
    "]]]]",
    "\"a\":{",
    "\"Records\":[",
    "\"value\":[",
    "\"entries\":[",
    "\"Events\":[{\"CloudTrailEvent\":\"",
    "\"eventTime\":\"",
    "2023-01-05T10:00:00Z",
    "\"accounts\":[",
    "\"projects\":[",
    "\"contexts\":[",
    "\"variables\":[",
    "\"fields\":{",
    "\"credentials\":[",
    "\"status\":\"",
];

const YAML: &[&str] = &[
    ": ",
    "- ",
    "\n  ",
    "\n    - ",
    "{",
    "}",
    "[",
    "]",
    "'",
    "\"",
    "|",
    ">",
    "&a ",
    "*a",
    "!!str ",
    "<<: *a",
    "---\n",
    "...\n",
    "# c\n",
    "~",
    "null",
    "true",
    "1h",
    "30d",
    "200000000d",
    "targets:\n",
    "bindings:\n",
    "endpoints:\n",
    "hunts:\n",
    "exec:\n",
    "grace: ",
    "provider: ",
    "vars: {",
    "project: gh/a/b",
    "context: c",
    "incident:\n  since: ",
];

const SIGMA: &[&str] = &[
    "title: t\n",
    "logsource: {product: aws, service: cloudtrail}\n",
    "detection:\n",
    "  condition: ",
    " and ",
    " or ",
    "not ",
    "(",
    ")",
    "1 of ",
    "all of ",
    "them",
    "sel*",
    "|contains",
    "|startswith",
    "|endswith",
    "|all",
    "|re",
    "|cidr",
    "|cased",
    "|exists",
    "|fieldref",
    "|base64",
    "'*'",
    "'?'",
    "'\\*'",
    "a*a*a*b",
    "(?i)",
    ".*",
    "[a-",
    "10.0.0.0/8",
    "level: high\n",
    "tags: [rekey.hunt.aws-recon]\n",
    "  sel: {eventName: [",
    "null",
    "- ",
];

const CONDITION: &[&str] = &[
    " and ",
    " or ",
    "not ",
    "(",
    ")",
    "1 of ",
    "all of ",
    "any of ",
    "them",
    "sel",
    "sel_a",
    "filter_*",
    "sel*",
    "*",
    "| count() > 5",
    " of ",
    "2 of ",
];

const CSV: &[&str] = &[
    ",",
    "\"",
    "\"\"",
    "\n",
    "\r\n",
    "{",
    "}",
    "[",
    "]",
    "true",
    "false",
    "{\"ip_address\":\"",
    "2023-01-05T10:00:00Z",
    "user.logged_in",
];

pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "plan",
            about: "plan YAML: load (located errors) and validate",
            seeds: || files(&["plans", "tests/fixtures"], &["yaml", "yml"]),
            dict: YAML,
            run: plan,
        },
        Target {
            name: "plan-fast",
            about: "plan YAML: the fast reader agrees with serde-saphyr or declines",
            seeds: || files(&["plans", "tests/fixtures"], &["yaml", "yml"]),
            dict: YAML,
            run: plan_fast,
        },
        Target {
            name: "env-inspector",
            about: "CircleCI-Env-Inspector JSON, current and older formats",
            seeds: || files(&["tests/fixtures/env-inspector"], &["json"]),
            dict: JSON,
            run: env_inspector,
        },
        Target {
            name: "inventory",
            about: "rekey inventory JSON (`--inventory`)",
            seeds: || {
                let mut s = files(&["plans", "tests/fixtures/classify"], &["json"]);
                s.retain(|t| !t.starts_with(b"{\n  \"$schema"));
                s
            },
            dict: JSON,
            run: inventory,
        },
        Target {
            name: "cloudtrail",
            about: "CloudTrail delivery files, JSON lines, LookupEvents pages (+ every rule)",
            seeds: || {
                let mut s = dataset_lines("cloudtrail-invictus", 64);
                s.push(br#"{"Events":[{"CloudTrailEvent":"{\"eventTime\":\"2023-01-05T10:00:00Z\",\"eventName\":\"ListUsers\"}"}]}"#.to_vec());
                s
            },
            dict: JSON,
            run: |b| records(Source::Cloudtrail, b),
        },
        Target {
            name: "circleci-csv",
            about: "CircleCI audit log CSV export (+ every rule)",
            seeds: || files(&["tests/fixtures/hunt"], &["csv"]),
            dict: CSV,
            run: |b| records(Source::CircleciAudit, b),
        },
        Target {
            name: "circleci-jsonl",
            about: "CircleCI audit log JSON lines (+ every rule)",
            seeds: || fixture_lines("circleci-audit.jsonl"),
            dict: JSON,
            run: |b| records(Source::CircleciAudit, b),
        },
        Target {
            name: "github",
            about: "GitHub audit log: the API's array, JSON lines (+ every rule)",
            seeds: || files(&["tests/fixtures/hunt/github-audit.json"], &["json"]),
            dict: JSON,
            run: |b| records(Source::GithubAudit, b),
        },
        Target {
            name: "gcp",
            about: "GCP Cloud Logging entries: lines, arrays, entries:list pages (+ every rule)",
            seeds: || fixture_lines("gcp-logging.jsonl"),
            dict: JSON,
            run: |b| records(Source::GcpLogging, b),
        },
        Target {
            name: "azure-signins",
            about: "Entra ID sign-ins: Graph `value` pages, lines (+ every rule)",
            seeds: || files(&["tests/fixtures/hunt/azure-signins.json"], &["json"]),
            dict: JSON,
            run: |b| records(Source::AzureSignins, b),
        },
        Target {
            name: "azure-activity",
            about: "Azure Activity Log: REST pages, arrays, lines (+ every rule)",
            seeds: || files(&["tests/fixtures/hunt/azure-activity.json"], &["json"]),
            dict: JSON,
            run: |b| records(Source::AzureActivity, b),
        },
        Target {
            name: "sigma-rule",
            about: "third-party Sigma rules: YAML, detection, modifiers, regexes (+ matching)",
            seeds: || {
                let mut s = files(&["src/hunt/rules"], &["yml"]);
                s.extend(
                    files(&["../shared/datasets/sigma-aws-cloudtrail"], &["yml"])
                        .into_iter()
                        .take(200),
                );
                s
            },
            dict: SIGMA,
            run: sigma_rule,
        },
        Target {
            name: "sigma-condition",
            about: "Sigma conditions: and/or/not, parentheses, `1 of`, `all of`, `them`",
            seeds: || {
                [
                    "sel",
                    "sel and not filter_a",
                    "(sel_a or sel_b) and not 1 of filter_*",
                    "all of sel* and not (filter_a or filter_b)",
                    "1 of them",
                    "not (sel and (sel_a or not sel_b))",
                ]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect()
            },
            dict: CONDITION,
            run: condition,
        },
        Target {
            name: "exec-stdout",
            about: "what a plan's exec commands print: inspect and mint answers",
            seeds: || {
                [
                    r#"{"principal":"svc","credentials":[{"id":"k1","status":"active","created_at":"2023-01-05T10:00:00Z"}]}"#,
                    r#"{"id":"k2","fields":{"value":"s3cr3t","user":"u"}}"#,
                    r#"{"principal":"svc"}"#,
                ]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect()
            },
            dict: JSON,
            run: |b| {
                let (inspect, mint) = rekey::providers::exec::parse_answers(b);
                inspect || mint
            },
        },
    ]
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under the paths (files or folders, relative to the crate) with one of the
/// extensions.
fn files(paths: &[&str], exts: &[&str]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = paths.iter().map(|p| root().join(p)).collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut entries: Vec<PathBuf> =
                    rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
                entries.sort();
                stack.extend(entries);
            }
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e))
            && let Ok(b) = std::fs::read(&p)
        {
            out.push(b);
        }
    }
    out
}

/// A fixture of JSON lines: whole, and each line alone.
fn fixture_lines(name: &str) -> Vec<Vec<u8>> {
    let whole = std::fs::read(root().join("tests/fixtures/hunt").join(name)).unwrap_or_default();
    let mut out: Vec<Vec<u8>> = whole
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    out.push(whole);
    out
}

/// Records of a shared dataset (CloudTrail delivery files), cut to single-record deliveries.
fn dataset_lines(name: &str, max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for text in files(&[&format!("../shared/datasets/{name}")], &["json"]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
            continue;
        };
        for r in v["Records"].as_array().into_iter().flatten() {
            if out.len() >= max {
                return out;
            }
            out.push(
                serde_json::json!({ "Records": [r] })
                    .to_string()
                    .into_bytes(),
            );
            out.push(r.to_string().into_bytes());
        }
    }
    out
}

fn text(b: &[u8]) -> Option<&str> {
    std::str::from_utf8(b).ok()
}

/// Panics (a finding) when the fast reader accepts a text serde-saphyr reads otherwise.
fn plan_fast(b: &[u8]) -> bool {
    let Some(t) = text(b) else { return false };
    let Ok(fast) = rekey::plan::fastload::from_str::<rekey::plan::Plan>(t) else {
        return false;
    };
    if let Some(why) = rekey::plan::load::disagreement(t, &fast) {
        panic!("{why}");
    }
    true
}

fn plan(b: &[u8]) -> bool {
    let Some(t) = text(b) else { return false };
    match rekey::plan::load::parse("fuzz.yaml", t) {
        Ok(p) => {
            let _ = rekey::plan::validate::validate("fuzz.yaml", t, &p);
            true
        }
        Err(d) => {
            let _ = d.to_string();
            false
        }
    }
}

fn env_inspector(b: &[u8]) -> bool {
    let Some(t) = text(b) else { return false };
    match rekey::inventory::env_inspector::import("fuzz.json", t, chrono::Utc::now()) {
        Ok(_) => true,
        Err(d) => {
            let _ = d.to_string();
            false
        }
    }
}

fn inventory(b: &[u8]) -> bool {
    let Some(t) = text(b) else { return false };
    // As `load_inventory` reads it: with the JSON path of an error.
    let mut de = serde_json::Deserializer::from_str(t);
    serde_path_to_error::deserialize::<_, rekey::inventory::model::Inventory>(&mut de)
        .map_err(|e| e.path().to_string())
        .is_ok()
}

/// The built-in pack and, when present, every SigmaHQ CloudTrail rule; built once.
struct Hunt {
    rules: &'static RuleSet,
    prefilters: Vec<(Source, Prefilter<'static>)>,
}

fn hunt() -> &'static Hunt {
    static HUNT: OnceLock<Hunt> = OnceLock::new();
    HUNT.get_or_init(|| {
        let mut rules = RuleSet::builtin();
        let _ = rules.add_path(&root().join("../shared/datasets/sigma-aws-cloudtrail"));
        let rules: &'static RuleSet = Box::leak(Box::new(rules));
        let prefilters = source::ALL_SOURCES
            .iter()
            .map(|&s| (s, Prefilter::new(rules.for_source(s))))
            .collect();
        Hunt { rules, prefilters }
    })
}

/// Evaluates every candidate rule on each record, as a hunt worker does.
struct Matcher<'h> {
    pre: &'h Prefilter<'static>,
    records: u64,
}

impl Sink for Matcher<'_> {
    fn record(&mut self, _: Loc<'_>, f: &Fields<'_>) {
        self.records += 1;
        for rule in self.pre.candidates(f) {
            let _ = rule.matches(f);
        }
    }
    fn problem(&mut self, p: Problem) {
        let _ = p.message.len();
    }
}

fn records(source: Source, b: &[u8]) -> bool {
    let h = hunt();
    let Some(pre) = h
        .prefilters
        .iter()
        .find(|(s, _)| *s == source)
        .map(|(_, p)| p)
    else {
        return false;
    };
    let mut sink = Matcher { pre, records: 0 };
    let set = h.rules.fields.set(source);
    // One input in sixteen goes through gzip, as a `.json.gz` would.
    let gz;
    let input: &[u8] = if b.len().is_multiple_of(16) {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let _ = e.write_all(b);
        gz = e.finish().unwrap_or_default();
        &gz
    } else {
        b
    };
    let _ = source::read_from(source, "fuzz", input, set, &mut sink);
    sink.records > 0
}

fn sigma_rule(b: &[u8]) -> bool {
    let Some(t) = text(b) else { return false };
    let mut fields = FieldSets::new();
    let Ok(rule) = sigma::load("fuzz.yml", t, &mut fields) else {
        return false;
    };
    // Match it against a few records of its source.
    let set = fields.set(rule.source);
    let samples = [
        r#"{"eventName":"ListUsers","userAgent":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab","sourceIPAddress":"10.1.2.3","errorCode":"AccessDenied"}"#,
        r#"{"eventName":"","userIdentity":{"accessKeyId":null,"arn":["x"]},"requestParameters":{"a":[1,{"b":"c"}]}}"#,
    ];
    for s in samples {
        struct One<'r>(&'r sigma::Rule);
        impl Sink for One<'_> {
            fn record(&mut self, _: Loc<'_>, f: &Fields<'_>) {
                let _ = self.0.matches(f);
            }
            fn problem(&mut self, _: Problem) {}
        }
        let _ = source::read_from(rule.source, "s", s.as_bytes(), set, &mut One(&rule));
    }
    true
}

fn condition(b: &[u8]) -> bool {
    let Some(t) = text(b) else { return false };
    let names: Vec<String> = ["sel", "sel_a", "sel_b", "filter_a", "filter_b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match sigma::condition::parse(t, &names) {
        Ok(mut c) => {
            c.order_by(&|i| i as u32);
            let _ = c.required(&|_| Some(vec![String::from("x")]), &|r: &[String]| {
                r.len() as u64
            });
            let _ = c.eval(&mut |i| i % 2 == 0);
            true
        }
        Err(_) => false,
    }
}
