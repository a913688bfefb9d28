//! `rekey hunt`: the command line of a standalone hunt — arguments, loading rules and
//! allow-lists, printing the findings, and exit 3 at `--fail-on`. The work is in `rekey::hunt`.

use super::{Failure, Output, print_json};
use rekey::hunt::engine::{self, HuntOptions};
use rekey::hunt::pack::RuleSet;
use rekey::hunt::source::Source;
use rekey::hunt::{CATALOGUE, Severity};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct HuntArgs {
    /// CloudTrail log files: a `.json`/`.json.gz` file, a directory tree of them, or a
    /// LookupEvents response saved as JSON (repeatable).
    #[arg(long, value_name = "PATH")]
    cloudtrail: Vec<PathBuf>,
    /// CircleCI audit log: the CSV export or JSON lines (repeatable).
    #[arg(long, value_name = "FILE")]
    circleci_audit: Vec<PathBuf>,
    /// GitHub organization audit log: the API's JSON array or JSON lines (repeatable).
    #[arg(long, value_name = "FILE")]
    github_audit: Vec<PathBuf>,
    /// GCP Cloud Logging entries: JSON lines, an array, or an entries.list response (repeatable).
    #[arg(long, value_name = "FILE")]
    gcp_logging: Vec<PathBuf>,
    /// Azure service-principal sign-ins: Graph `value` pages or JSON lines (repeatable).
    #[arg(long, value_name = "FILE")]
    azure_signins: Vec<PathBuf>,
    /// Only records of this credential: AWS access key id, GCP key id or name, Azure credential
    /// key id, GitHub hashed token or actor (repeatable).
    #[arg(
        long = "access-key-id",
        visible_alias = "credential",
        value_name = "ID"
    )]
    credentials: Vec<String>,
    /// Start of the incident window (RFC 3339); earlier records form the baseline only.
    /// Default: the plan's incident.since, else 2022-12-21T00:00:00Z.
    #[arg(long, value_name = "TIME")]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Third-party Sigma rules (a directory tree of .yml, or one file), loaded unchanged (repeatable).
    #[arg(long, value_name = "DIR")]
    rules: Vec<PathBuf>,
    /// Leave out the built-in rule pack (only --rules).
    #[arg(long)]
    no_builtin: bool,
    /// Expected addresses: one CIDR or address a line.
    #[arg(long, value_name = "FILE")]
    allow_cidrs: Option<PathBuf>,
    /// Take incident.since and allow_cidrs from this rotation plan.
    #[arg(long, value_name = "PLAN")]
    plan: Option<PathBuf>,
    /// Actors whose CircleCI variable changes are expected (repeatable).
    #[arg(long, value_name = "NAME")]
    expected_actor: Vec<String>,
    /// Exit 3 when a finding reaches this severity.
    #[arg(long, value_name = "SEVERITY", default_value = "high")]
    fail_on: Severity,
    /// Also print a timeline per credential (table output).
    #[arg(long)]
    timeline: bool,
    /// Write the findings as a Markdown section to this file.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Write a timeline chart of the findings per credential, as SVG, to this file. With
    /// --markdown in the same folder (or one above it), the Markdown section shows the chart.
    #[arg(long, value_name = "FILE")]
    timeline_svg: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// List the hunts a plan can name, and the rules of each; then exit.
    #[arg(long)]
    list: bool,
}

pub fn run_hunt(args: HuntArgs, output: Output) -> Result<u8, Failure> {
    let mut rules = if args.no_builtin {
        RuleSet::default()
    } else {
        RuleSet::builtin()
    };
    for dir in &args.rules {
        rules
            .add_path(dir)
            .map_err(|e| Failure::input(format!("cannot read rules {}: {e}", dir.display())))?;
    }
    if args.list {
        return list(&rules, output);
    }
    let mut opts = HuntOptions::default();
    if let Some(plan_path) = &args.plan {
        let (_, plan) =
            rekey::plan::load::load_file(plan_path).map_err(|d| Failure::input(d.to_string()))?;
        opts.since = plan.incident.since.value;
        for c in &plan.allow_cidrs {
            opts.allow.push(engine::parse_cidr(&c.value).map_err(|e| {
                Failure::input(format!("{}: allow_cidrs: {e}", plan_path.display()))
            })?);
        }
    }
    if let Some(since) = args.since {
        opts.since = since;
    }
    if let Some(file) = &args.allow_cidrs {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file)
            .map_err(|e| Failure::input(format!("cannot read {name}: {e}")))?;
        opts.allow
            .extend(engine::parse_cidrs(&name, &text).map_err(Failure::input)?);
    }
    let sources = [
        (Source::Cloudtrail, &args.cloudtrail),
        (Source::CircleciAudit, &args.circleci_audit),
        (Source::GithubAudit, &args.github_audit),
        (Source::GcpLogging, &args.gcp_logging),
        (Source::AzureSignins, &args.azure_signins),
    ];
    for (source, paths) in sources {
        opts.inputs
            .extend(paths.iter().map(|p| (source, p.clone())));
    }
    if opts.inputs.is_empty() {
        return Err(Failure::input(
            "say where to hunt: --cloudtrail PATH, --circleci-audit FILE, --github-audit FILE, --gcp-logging FILE or --azure-signins FILE (or --list)",
        ));
    }
    for (_, p) in &opts.inputs {
        if !p.exists() {
            return Err(Failure::input(format!("{} does not exist", p.display())));
        }
    }
    opts.credentials = args.credentials.clone();
    opts.expected_actors = args.expected_actor.clone();
    opts.threads = args.threads;
    let report = engine::run(&rules, &opts);
    if let Some(svg) = &args.timeline_svg {
        let chart = rekey::hunt::timeline_svg::render(&report);
        rekey::fsio::write_atomically(svg, chart.as_bytes())
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", svg.display())))?;
    }
    if let Some(md) = &args.markdown {
        let chart = args
            .timeline_svg
            .as_deref()
            .and_then(|svg| chart_link(md, svg));
        let section = report.markdown_section_with_chart(chart.as_deref());
        rekey::fsio::write_atomically(md, section.as_bytes())
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", md.display())))?;
    }
    match output {
        Output::Json => {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            report
                .write_json(&mut w)
                .map_err(|e| Failure::runtime(format!("cannot write the findings: {e}")))?;
            std::io::Write::write_all(&mut w, b"\n")
                .and_then(|()| std::io::Write::flush(&mut w))
                .map_err(|e| Failure::runtime(format!("cannot write the findings: {e}")))?;
        }
        Output::Table => {
            print!("{}", report.to_table());
            if args.timeline {
                print!("\nTimeline\n{}", report.timeline());
            }
        }
    }
    Ok(match report.highest() {
        Some(s) if s >= args.fail_on => 3,
        _ => 0,
    })
}

/// The chart's path relative to the Markdown file's folder, with `/` separators, when the chart
/// is in that folder or below it (a report is moved with the files beside it, not with others).
fn chart_link(md: &Path, svg: &Path) -> Option<String> {
    let folder = |p: &Path| {
        let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::canonicalize(parent.unwrap_or(Path::new("."))).ok()
    };
    let (md_dir, svg_dir) = (folder(md)?, folder(svg)?);
    let rel = svg_dir.strip_prefix(&md_dir).ok()?.join(svg.file_name()?);
    let parts: Vec<&str> = rel
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect::<Option<_>>()?;
    let link = parts.join("/");
    (!link.contains(['<', '>', '\n', '\r'])).then_some(link)
}

fn list(rules: &RuleSet, output: Output) -> Result<u8, Failure> {
    let of = |name: &str| -> Vec<&str> {
        rules
            .rules
            .iter()
            .filter(|r| r.hunt.as_deref() == Some(name))
            .map(|r| &*r.title)
            .collect()
    };
    let third_party: Vec<&str> = rules
        .rules
        .iter()
        .filter(|r| r.hunt.is_none())
        .map(|r| &*r.title)
        .collect();
    match output {
        Output::Json => print_json(&serde_json::json!({
            "hunts": CATALOGUE.iter().map(|h| serde_json::json!({
                "name": h.name,
                "phase": format!("{:?}", h.phase).to_lowercase(),
                "summary": h.summary,
                "rules": of(h.name),
            })).collect::<Vec<_>>(),
            "other_rules": third_party,
            "rule_errors": rules.errors,
        })),
        Output::Table => {
            let mut t = rekey::report::Table::new(["HUNT", "PHASE", "WHAT", "RULES"]);
            for h in CATALOGUE {
                let rs = of(h.name);
                t.row([
                    h.name.to_string(),
                    format!("{:?}", h.phase).to_lowercase(),
                    h.summary.to_string(),
                    if rs.is_empty() {
                        "(in code)".to_string()
                    } else {
                        rs.len().to_string()
                    },
                ]);
            }
            print!("{}", t.render());
            if !third_party.is_empty() {
                println!("\n{} further rule(s) from --rules.", third_party.len());
            }
            for e in &rules.errors {
                println!("rule not loaded: {}: {}", e.origin, e.reason);
            }
        }
    }
    Ok(0)
}
