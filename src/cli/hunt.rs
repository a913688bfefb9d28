//! `rekey hunt`: the command line of a standalone hunt — arguments, loading rules and
//! allow-lists, printing the findings, and exit 3 at `--fail-on`. The work is in `crate::hunt`.

use super::output::{Failure, Output, print_json, runtime};
use crate::hunt::engine::{self, HuntOptions};
use crate::hunt::findings::HuntReport;
use crate::hunt::pack::RuleSet;
use crate::hunt::remote::{self, Remote, Window};
use crate::hunt::source::Source;
use crate::hunt::{CATALOGUE, Severity};
use crate::plan::PlanDuration;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct HuntArgs {
    #[command(flatten)]
    endpoint_policy: crate::policy::EndpointPolicy,
    /// CloudTrail log files: a `.json`/`.json.gz` file, a directory tree of them, a
    /// LookupEvents response saved as JSON, or `s3://BUCKET/PREFIX` (fetched with the AWS
    /// default credential chain; `AWS_ENDPOINT_URL` is honoured) (repeatable).
    #[arg(long, value_name = "PATH")]
    cloudtrail: Vec<PathBuf>,
    /// Hunt in the CloudTrail table of Athena (DATABASE.TABLE): the rules run there as SQL,
    /// narrowed by the `timestamp` partitions of the window and the --access-key-id in scope;
    /// the rows are read like log files (AWS default credential chain).
    #[arg(long, value_name = "DATABASE.TABLE")]
    athena: Option<String>,
    /// The Athena workgroup (default `primary`).
    #[arg(long, value_name = "WORKGROUP", requires = "athena")]
    athena_workgroup: Option<String>,
    /// Where Athena writes the results (`s3://…`); default: the workgroup's output location.
    #[arg(long, value_name = "S3_URL", requires = "athena")]
    athena_output: Option<String>,
    /// Only events of this region (repeatable); with --athena-region-partition, also the
    /// table's `region` partition.
    #[arg(long, value_name = "REGION", requires = "athena")]
    athena_region: Vec<String>,
    /// The table is partitioned by `region` as well as `timestamp`.
    #[arg(long, requires = "athena")]
    athena_region_partition: bool,
    /// Print the Athena queries and what they will scan, run nothing.
    #[arg(long, requires = "athena")]
    dry_run: bool,
    /// Fetch CloudTrail LookupEvents (event history: management events, 90 days) for every
    /// --access-key-id.
    #[arg(long)]
    lookup_events: bool,
    /// CircleCI audit log: the CSV export or JSON lines (repeatable).
    #[arg(long, value_name = "FILE")]
    circleci_audit: Vec<PathBuf>,
    /// GitHub organization audit log: the API's JSON array or JSON lines (repeatable).
    #[arg(long, value_name = "FILE")]
    github_audit: Vec<PathBuf>,
    /// Fetch the audit log of this GitHub organization (`GET /orgs/ORG/audit-log`,
    /// `include=all`; token from GITHUB_TOKEN or `rekey auth set github`; GITHUB_API_URL).
    #[arg(long, value_name = "ORG")]
    github_org: Option<String>,
    /// Narrow --github-org with a search phrase (`action:git.clone`, `actor:octocat`, …),
    /// added to the window's `created:>=`.
    #[arg(long, value_name = "PHRASE", requires = "github_org")]
    github_phrase: Option<String>,
    /// GCP Cloud Logging entries: JSON lines, an array, or an entries.list response (repeatable).
    #[arg(long, value_name = "FILE")]
    gcp_logging: Vec<PathBuf>,
    /// Fetch the audit logs of this GCP project (Cloud Logging `entries:list`; credentials from
    /// GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_OAUTH_ACCESS_TOKEN).
    #[arg(long, value_name = "PROJECT")]
    gcp_project: Option<String>,
    /// Only entries of this principal (service-account email) with --gcp-project.
    #[arg(long, value_name = "EMAIL", requires = "gcp_project")]
    gcp_principal: Option<String>,
    /// Azure service-principal sign-ins: Graph `value` pages or JSON lines (repeatable).
    #[arg(long, value_name = "FILE")]
    azure_signins: Vec<PathBuf>,
    /// Fetch service-principal sign-ins from Microsoft Graph (beta `auditLogs/signIns`; kept 30
    /// days with Entra ID P1/P2, 7 without; AZURE_TENANT_ID, AZURE_CLIENT_ID,
    /// AZURE_CLIENT_SECRET; the app needs AuditLog.Read.All and Directory.Read.All).
    #[arg(long)]
    azure_graph: bool,
    /// Only sign-ins of this application (client) id with --azure-graph.
    #[arg(long, value_name = "ID", requires = "azure_graph")]
    azure_app_id: Option<String>,
    /// Azure Activity Log events: the REST API's `value` pages, an array, or JSON lines
    /// (repeatable).
    #[arg(long, value_name = "FILE")]
    azure_activity: Vec<PathBuf>,
    /// Fetch the Activity Log of this Azure subscription (Azure Resource Manager; kept 90 days;
    /// the AZURE_* credentials, with Reader on the subscription).
    #[arg(long, value_name = "SUBSCRIPTION")]
    azure_subscription: Option<String>,
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
    /// How far before --since the APIs are read, to learn what was normal (addresses, hours)
    /// (`30d`, `12h`, …).
    #[arg(long, value_name = "DURATION", default_value = "30d", value_parser = PlanDuration::parse)]
    baseline: PlanDuration,
    /// End of the window asked of the APIs (RFC 3339; default now).
    #[arg(long, value_name = "TIME")]
    until: Option<chrono::DateTime<chrono::Utc>>,
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
    /// Show every record in the table, timeline and Markdown instead of one row per
    /// (credential, rule, action, source address); JSON always has both.
    #[arg(long)]
    all: bool,
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
    /// Run the post-rotation hunts of this run again (audit logs arrive late): the plan, the
    /// credentials and the times come from the journal; nothing is changed.
    #[arg(long, value_name = "RUN_ID")]
    run: Option<String>,
    /// The state of `--run`.
    #[command(flatten)]
    state: super::state::StateAt,
}

pub fn run(args: HuntArgs, output: Output) -> Result<u8, Failure> {
    crate::hunt::phases::mark("cli: start");
    let rules = RuleSet::load(!args.no_builtin, &args.rules)
        .map_err(|(dir, e)| Failure::input(format!("cannot read rules {}: {e}", dir.display())))?;
    if args.list {
        return list(&rules, output);
    }
    if let Some(run) = &args.run {
        let report = rerun(&args, run, rules)?;
        return print_report(&args, &report, output);
    }
    args.endpoint_policy
        .check_environment()
        .map_err(Failure::input)?;
    let mut opts = HuntOptions {
        // This process ends once the report is printed (the report too is left to its end,
        // below).
        process_ends_after: true,
        ..HuntOptions::default()
    };
    let mut endpoints = remote::Endpoints::default();
    if let Some(plan_path) = &args.plan {
        let (_, plan) =
            crate::plan::load::load_file(plan_path).map_err(|d| Failure::input(d.to_string()))?;
        opts.since = plan.incident_since();
        args.endpoint_policy
            .check_endpoints(&plan.endpoints)
            .map_err(|e| Failure::input(format!("{}: {e}", plan_path.display())))?;
        endpoints = endpoints.with_plan(&plan.endpoints);
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
    let mut remotes = Vec::new();
    for p in &args.cloudtrail {
        match p.to_str().and_then(Remote::parse_s3) {
            Some(Ok(r)) => remotes.push(r),
            Some(Err(e)) => return Err(Failure::input(e)),
            None => opts.inputs.push((Source::Cloudtrail, p.clone())),
        }
    }
    let sources = [
        (Source::CircleciAudit, &args.circleci_audit),
        (Source::GithubAudit, &args.github_audit),
        (Source::GcpLogging, &args.gcp_logging),
        (Source::AzureSignins, &args.azure_signins),
        (Source::AzureActivity, &args.azure_activity),
    ];
    for (source, paths) in sources {
        opts.inputs
            .extend(paths.iter().map(|p| (source, p.clone())));
    }
    if args.lookup_events {
        if args.credentials.is_empty() {
            return Err(Failure::input(
                "--lookup-events looks events up by access key id: give at least one --access-key-id",
            ));
        }
        remotes.push(Remote::LookupEvents {
            access_key_ids: args.credentials.clone(),
        });
    }
    if let Some(org) = &args.github_org {
        remotes.push(Remote::GithubOrg {
            org: org.clone(),
            phrase: args.github_phrase.clone(),
        });
    }
    if let Some(project) = &args.gcp_project {
        remotes.push(Remote::GcpProject {
            project: project.clone(),
            principal: args.gcp_principal.clone(),
        });
    }
    if args.azure_graph {
        remotes.push(Remote::AzureSignins {
            app_id: args.azure_app_id.clone(),
        });
    }
    if let Some(subscription) = &args.azure_subscription {
        remotes.push(Remote::AzureActivity {
            subscription: subscription.clone(),
        });
    }
    if let Some(name) = &args.athena {
        remotes.push(Remote::Athena(athena_table(&args, name)?));
    }
    if opts.inputs.is_empty() && remotes.is_empty() {
        return Err(Failure::input(
            "say where to hunt: --cloudtrail PATH|s3://BUCKET/PREFIX, --lookup-events, --circleci-audit FILE, --github-audit FILE, --github-org ORG, --gcp-logging FILE, --gcp-project P, --azure-signins FILE, --azure-graph, --azure-activity FILE, --azure-subscription SUB or --athena DATABASE.TABLE (or --list)",
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
    let report = if remotes.is_empty() {
        engine::run(&rules, &opts)
    } else {
        let until = args.until.unwrap_or_else(chrono::Utc::now);
        let baseline = chrono::Duration::seconds(
            i64::try_from(args.baseline.seconds()).unwrap_or(i64::MAX / 1000),
        );
        let window = Window {
            from: opts.since - baseline,
            until,
        };
        if window.from >= window.until {
            return Err(Failure::input(format!(
                "the window is empty: from {} (--since minus --baseline) to {} (--until)",
                window.from.to_rfc3339(),
                window.until.to_rfc3339()
            )));
        }
        if args.dry_run {
            let rt = runtime()?;
            let sdk = rt.block_on(remote::Credentials::default().aws_config());
            for r in &remotes {
                if let Remote::Athena(t) = r {
                    let text = rt
                        .block_on(crate::hunt::athena::dry_run(
                            &sdk,
                            t,
                            &rules,
                            &opts.credentials,
                            window,
                            opts.since,
                        ))
                        .map_err(Failure::input)?;
                    print!("{text}");
                }
            }
            return Ok(0);
        }
        let credentials = remote::Credentials::from_env(&remotes).map_err(Failure::input)?;
        let ctx = Arc::new(remote::Context {
            endpoints,
            credentials,
            ..Default::default()
        });
        let rt = runtime()?;
        rt.block_on(remote::hunt(Arc::new(rules), opts, remotes, window, ctx))
    };
    let code = print_report(&args, &report, output);
    crate::hunt::phases::mark("cli: report printed");
    // The process ends next: freeing every finding one by one was the last few percent of a hunt.
    std::mem::forget(report);
    crate::hunt::phases::mark("cli: end");
    code
}

/// The table of `--athena` and its options.
fn athena_table(args: &HuntArgs, name: &str) -> Result<crate::hunt::athena::Table, Failure> {
    let mut t = crate::hunt::athena::Table::parse_name(name)
        .map_err(|e| Failure::input(format!("--athena: {e}")))?;
    if let Some(wg) = &args.athena_workgroup {
        t.workgroup = wg.clone();
    }
    if let Some(out) = &args.athena_output {
        if !out.starts_with("s3://") {
            return Err(Failure::input(format!(
                "--athena-output `{out}`: expected s3://BUCKET/PREFIX"
            )));
        }
        t.output = Some(out.clone());
    }
    t.regions = args.athena_region.clone();
    t.region_partition = args.athena_region_partition;
    Ok(t)
}

/// The post-rotation hunts of a finished run, as one report; each target's skipped hunts and
/// unread sources become notes naming the target.
fn rerun(args: &HuntArgs, run: &str, rules: RuleSet) -> Result<HuntReport, Failure> {
    let rt = runtime()?;
    let results = rt
        .block_on(crate::engine::hunts::rerun_post(
            &args.state.state_dir,
            run,
            Arc::new(rules),
        ))
        .map_err(|e| Failure::input(e.to_string()))?;
    let mut report = HuntReport::default();
    for (target, r) in results {
        report.findings.extend(r.report.findings);
        report.problems.extend(r.report.problems);
        report.incomplete.extend(r.report.incomplete);
        report.stats.records += r.report.stats.records;
        report.stats.files += r.report.stats.files;
        report.stats.pages += r.report.stats.pages;
        report.stats.bytes += r.report.stats.bytes;
        for note in r.report.notes.into_iter().chain(r.notes) {
            report.notes.push(format!("{target}: {note}"));
        }
        if !r.skipped.is_empty() {
            report
                .notes
                .push(format!("{target}: skipped {}", r.skipped.join("; ")));
        }
        if !r.unread.is_empty() {
            report
                .notes
                .push(format!("{target}: could not read {}", r.unread.join("; ")));
        }
    }
    report.normalize();
    Ok(report)
}

fn print_report(args: &HuntArgs, report: &HuntReport, output: Output) -> Result<u8, Failure> {
    if let Some(svg) = &args.timeline_svg {
        let chart = crate::hunt::timeline_svg::render(report);
        crate::fsio::write_atomically(svg, chart.as_bytes())
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", svg.display())))?;
    }
    if let Some(md) = &args.markdown {
        let chart = args
            .timeline_svg
            .as_deref()
            .and_then(|svg| chart_link(md, svg));
        let section = if args.all {
            report.markdown_section_every_record(chart.as_deref())
        } else {
            report.markdown_section_with_chart(chart.as_deref())
        };
        crate::fsio::write_atomically(md, section.as_bytes())
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", md.display())))?;
    }
    match output {
        Output::Json => {
            let stdout = std::io::stdout();
            widen_pipe(&stdout);
            // The findings come in windows of a few hundred KB, written through as they are;
            // the buffer gathers the small fields around them.
            let mut w = std::io::BufWriter::with_capacity(1 << 16, report_out(&stdout));
            report
                .write_json_with(&mut w, args.threads)
                .map_err(|e| Failure::runtime(format!("cannot write the findings: {e}")))?;
            crate::hunt::phases::mark("cli: json rendered");
            std::io::Write::write_all(&mut w, b"\n")
                .and_then(|()| std::io::Write::flush(&mut w))
                .map_err(|e| Failure::runtime(format!("cannot write the findings: {e}")))?;
        }
        Output::Table => {
            // Records are the attacker's: their control sequences are shown, not obeyed.
            let table = if args.all {
                report.to_table_all()
            } else {
                report.to_table()
            };
            print!("{}", crate::escape::terminal(&table));
            if args.timeline {
                let t = if args.all {
                    report.timeline_all()
                } else {
                    report.timeline()
                };
                print!("\nTimeline\n{}", crate::escape::terminal(&t));
            }
        }
    }
    // Findings at the threshold are the strongest signal (3). Otherwise a source that could
    // not be read (wholly or in part) makes the run a failure (1): a hunt that did not see
    // everything must not look clean.
    if !report.incomplete.is_empty() {
        eprintln!(
            "the hunt is incomplete: {} source(s) or page(s) could not be read (listed in the report)",
            report.incomplete.len()
        );
    }
    Ok(match report.highest() {
        Some(s) if s >= args.fail_on => 3,
        _ if !report.incomplete.is_empty() => 1,
        _ => 0,
    })
}

/// Asks for a larger pipe when stdout is one (a JSON report of a busy trail is tens of MB): a
/// 64 KiB pipe made the writer and its reader take turns every 64 KiB. Best effort: the kernel
/// caps the size (`/proc/sys/fs/pipe-max-size`) and a file or terminal is left as it is.
#[cfg(target_os = "linux")]
fn widen_pipe(stdout: &std::io::Stdout) {
    use std::os::fd::AsRawFd;
    let fd = stdout.as_raw_fd();
    // SAFETY: fstat and fcntl on our own stdout descriptor, with a stat buffer we own; neither
    // touches memory beyond it, and a failure changes nothing.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFIFO {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, 1 << 20);
        }
    }
}

/// Standard output for a report of tens of MB: on Unix a duplicate of its descriptor, written
/// to directly; elsewhere, or when it cannot be duplicated, the standard handle. Why: the
/// handle is line-buffered, and searched every window of findings written for a newline, on
/// the one thread that writes.
fn report_out(stdout: &std::io::Stdout) -> Box<dyn std::io::Write + '_> {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        // Whatever went through the handle first goes out first.
        let flushed = std::io::Write::flush(&mut stdout.lock());
        if flushed.is_ok()
            && let Ok(fd) = stdout.as_fd().try_clone_to_owned()
        {
            return Box::new(std::fs::File::from(fd));
        }
    }
    Box::new(stdout.lock())
}

/// Pipe sizes are a Linux setting (`F_SETPIPE_SZ`); elsewhere the pipe stays as it is.
#[cfg(not(target_os = "linux"))]
fn widen_pipe(_stdout: &std::io::Stdout) {}

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
            let mut t = crate::report::Table::new(["HUNT", "PHASE", "WHAT", "RULES"]);
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
                println!(
                    "rule not loaded: {}",
                    crate::escape::terminal(&format!("{}: {}", e.origin, e.reason))
                );
            }
        }
    }
    Ok(0)
}
