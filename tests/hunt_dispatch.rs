//! The rule dispatch ([`Prefilter`]) against evaluating every rule, on real records: the
//! built-in pack plus the 57 SigmaHQ CloudTrail rules over the Invictus CloudTrail dataset,
//! and the pack over the fixtures of the other sources. The dispatch may only skip rules that
//! do not match; a rule it skipped that matches would be a lost finding.

use rekey::hunt::fields::Fields;
use rekey::hunt::pack::RuleSet;
use rekey::hunt::sigma::{Prefilter, Rule};
use rekey::hunt::source::{self, Loc, Problem, Sink, Source};
use std::path::{Path, PathBuf};

fn root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// For each record: the rules that match it, by brute force and through the dispatch.
struct Compare<'r> {
    rules: Vec<&'r Rule>,
    pre: Prefilter<'r>,
    records: usize,
    matches: usize,
    evaluated: usize,
}

impl Sink for Compare<'_> {
    fn record(&mut self, loc: Loc<'_>, f: &Fields<'_>) {
        self.records += 1;
        let all: Vec<&str> = self
            .rules
            .iter()
            .filter(|r| r.matches(f))
            .map(|r| &*r.id)
            .collect();
        let candidates: Vec<&Rule> = self.pre.candidates(f).collect();
        self.evaluated += candidates.len();
        let dispatched: Vec<&str> = candidates
            .into_iter()
            .filter(|r| r.matches(f))
            .map(|r| &*r.id)
            .collect();
        assert_eq!(
            dispatched, all,
            "{loc}: the dispatch lost or reordered a match"
        );
        self.matches += all.len();
    }
    /// The fixtures hold malformed records on purpose; the dataset's count is asserted.
    fn problem(&mut self, _: Problem) {}
}

fn compare(rules: &RuleSet, source: Source, files: &[PathBuf]) -> (usize, usize, usize) {
    let list: Vec<&Rule> = rules.for_source(source).collect();
    let mut sink = Compare {
        pre: Prefilter::new(list.iter().copied()),
        rules: list,
        records: 0,
        matches: 0,
        evaluated: 0,
    };
    for f in files {
        source::read_file(source, f, rules.fields.set(source), &mut sink).expect("readable");
    }
    (sink.records, sink.matches, sink.evaluated)
}

#[test]
fn dispatch_matches_what_every_rule_matches_on_real_cloudtrail() {
    let (ct, sigma) = (
        root("../shared/datasets/cloudtrail-invictus"),
        root("../shared/datasets/sigma-aws-cloudtrail"),
    );
    if !ct.is_dir() || !sigma.is_dir() {
        eprintln!(
            "\n!!!!!! SKIPPED: the shared datasets are absent; this test proves nothing here !!!!!!\n"
        );
        return;
    }
    let mut rules = RuleSet::builtin();
    assert_eq!(rules.add_path(&sigma).expect("SigmaHQ rules"), 57);
    let files = source::expand(Source::Cloudtrail, &ct).expect("dataset");
    let (records, matches, evaluated) = compare(&rules, Source::Cloudtrail, &files);
    let n = rules.for_source(Source::Cloudtrail).count();
    eprintln!("DEBUG records {records} rules {n} evaluated {evaluated} matches {matches}");
    assert_eq!(records, 2900);
    assert!(matches > 1000, "{matches}");
    // Most rules are never evaluated for most records.
    assert!(
        evaluated * 10 < records * n,
        "{evaluated} evaluations for {records} records and {n} rules"
    );
}

#[test]
fn dispatch_matches_what_every_rule_matches_on_the_other_sources() {
    let rules = RuleSet::builtin();
    let fixture = |name: &str| vec![root("tests/fixtures/hunt").join(name)];
    let mut matches = 0;
    for (source, file) in [
        (Source::AzureActivity, "azure-activity.json"),
        (Source::AzureSignins, "azure-signins.json"),
        (Source::CircleciAudit, "circleci-audit.csv"),
        (Source::CircleciAudit, "circleci-audit.jsonl"),
        (Source::GcpLogging, "gcp-logging.jsonl"),
        (Source::GithubAudit, "github-audit.json"),
    ] {
        let (records, m, _) = compare(&rules, source, &fixture(file));
        assert!(records > 0, "{file}");
        matches += m;
    }
    assert!(matches > 10, "{matches}");
}
