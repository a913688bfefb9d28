//! The `rekey` command line: parse arguments, call the library, print results, map errors to
//! exit codes (0 success, 1 failure, 2 invalid input or usage, 3 hunt findings, 4 incomplete).

mod hunt_cmd;

use clap::{Parser, Subcommand, ValueEnum};
use rekey::classify::{self, RuleSet};
use rekey::credentials::{self, Service};
use rekey::diagnostic::{self, Diagnostic};
use rekey::inventory::{self, Inventory};
use rekey::plan::{self, build::BuildOptions};
use rekey::report::Table;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rekey",
    version,
    about = "Rotate every secret your CI platform holds, and hunt for abuse of the old ones.",
    long_about = "rekey reads where CircleCI holds secrets (project and context variables, checkout and SSH keys), \
works out which credential each one is and who owns it, and writes a declarative YAML rotation plan that a person \
reviews before anything changes.\n\n\
The flow:\n  \
rekey inventory --org gh/acme --out inventory.json      # or --from-env-inspector circleci-data.json\n  \
rekey plan --inventory inventory.json --out plan.yaml\n  \
$EDITOR plan.yaml                                        # fill every REVIEW-REQUIRED, confirm groupings\n  \
rekey validate plan.yaml\n\n\
Secrets never appear in rekey's files, logs or arguments: CircleCI returns only masked values (xxxx + last four), \
and rekey keeps no more than that. Tokens come from CIRCLECI_TOKEN / GITHUB_TOKEN or the OS keyring (`rekey auth set`).",
    after_help = "Exit codes: 0 success, 1 failure, 2 invalid input or usage, 3 hunt findings, 4 run incomplete but resumable."
)]
struct Cli {
    /// Output format: human tables, or one JSON document on stdout for machines.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// More logging on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Record where secrets live in CircleCI: live from the API, or from Env-Inspector output.
    #[command(
        long_about = "Record where secrets live in CircleCI, as a normalized inventory (JSON) that `rekey plan` reads.\n\n\
Live: lists the organization's projects (those the token's user follows, or all of a circleci/ org with --org-id), \
their environment variables, checkout keys and additional SSH keys, and the organization's contexts with their \
variables. Requests run concurrently, honour 429 Retry-After and retry 5xx; a project or context that cannot be read \
is recorded as an error entry and the rest is still inventoried.\n\n\
Import: reads circleci-data.json as CircleCI-Env-Inspector writes it (current or older format).\n\n\
Examples:\n  rekey inventory --org gh/acme --out inventory.json\n  rekey inventory --org gh/acme --project gh/acme/api --project gh/acme/web --out inventory.json\n  rekey inventory --from-env-inspector circleci-data.json --out inventory.json"
    )]
    Inventory(InventoryArgs),
    /// Classify an inventory and write a rotation plan for review.
    #[command(
        long_about = "Classify every variable of an inventory (AWS key pairs, GCP and Azure credentials, GitHub tokens and \
deploy keys, checkout keys, well-known third-party tokens) and write a YAML rotation plan with a comment per target \
saying what it is and why. The same credential stored in several places becomes one target with several bindings. \
Nothing is dropped: unrecognised variables are listed as `unclassified`, configuration as `ignored`, unreadable \
places as `errors`.\n\n\
Examples:\n  rekey plan --inventory inventory.json --out plan.yaml\n  rekey plan --inventory inventory.json --rules our-rules.yaml --out plan.yaml"
    )]
    Plan(PlanArgs),
    /// Check a plan: syntax, types, and everything a reviewer could get wrong.
    #[command(
        long_about = "Check a plan and report every problem with file:line:column and the offending line: unknown fields, \
wrong types, unparsable durations and timestamps, duplicate target ids, a CircleCI variable bound by two targets, \
provider-specific fields that are missing, unknown hunts, and decisions still marked REVIEW-REQUIRED. \
Exit 2 when the plan is invalid; warnings (such as unconfirmed groupings) do not fail."
    )]
    Validate(ValidateArgs),
    /// Rotate: execute a reviewed plan (or preview it with --dry-run), journaled and resumable.
    #[command(
        long_about = "Execute a reviewed plan, target by target, through the rotation protocol: inspect, (make room), \
mint, verify the new credential, write it to every binding, read it back, (canary), deactivate the old credential, \
wait the grace period, revoke the old credential. Every step is journaled in the state directory before and after its \
side effect, and a minted value waits in an encrypted stash, so a crash loses nothing: `rekey apply --resume RUN_ID` \
(or applying the same plan again) continues where the run stopped. A grace period ends the invocation with the target \
waiting; the next apply after it revokes the old credential.\n\n\
--dry-run reads live state and prints what each target would do, changing nothing anywhere.\n\n\
Examples:\n  rekey apply plan.yaml --dry-run\n  rekey apply plan.yaml --report rotation.md\n  rekey apply --resume r20261128-095300-7f3a\n  rekey status"
    )]
    Apply(ApplyArgs),
    /// Hunt in audit logs (CloudTrail, CircleCI, GitHub, GCP, Azure) for abuse of credentials.
    #[command(
        long_about = "Hunt in audit-log exports for abuse of exposed credentials, with Sigma rules: the built-in pack \
(reconnaissance, access denials, scripted user agents, CircleCI persistence, GitHub git access, GCP errors and key \
creation, Azure sign-in failures) plus any third-party Sigma rules (--rules DIR, loaded unchanged). Beside the rules: \
an address baseline per credential (an address or /24 first seen after --since) and CIDR allow-lists.\n\n\
Records that cannot be read are reported with their file and line (or record number) and skipped.\n\n\
Examples:\n  rekey hunt --cloudtrail logs/ --access-key-id AKIA... --since 2022-12-21T00:00:00Z\n  \
rekey hunt --cloudtrail logs/ --rules sigma/rules/cloud/aws --output json\n  \
rekey hunt --circleci-audit audit.csv --github-audit audit.json --fail-on medium\n  rekey hunt --list",
        after_help = "Exit codes: 0 no finding at --fail-on, 1 failure, 2 invalid input, 3 findings at or above --fail-on."
    )]
    Hunt(hunt_cmd::HuntArgs),
    /// Show the whole flow on a made-up organization, in process: inventory, plan, dry run,
    /// apply (surviving injected faults), report. Nothing leaves this machine.
    Demo,
    /// List runs and, per target, the step reached and what is pending.
    Status(StatusArgs),
    /// Record that a manual step is done (revoking a GitHub token by hand); the next
    /// `apply --resume RUN` finishes the target.
    Confirm(ConfirmArgs),
    /// Store or remove rekey's own API tokens in the OS keyring.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Print the plan's JSON Schema (the file in plans/ is generated from this).
    #[command(hide = true)]
    Schema,
}

#[derive(clap::Args)]
struct InventoryArgs {
    /// Import CircleCI-Env-Inspector output instead of calling the API.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["org", "project", "org_id"])]
    from_env_inspector: Option<PathBuf>,
    /// Organization slug, e.g. gh/acme: its contexts, and the projects its members follow.
    #[arg(long, value_name = "SLUG")]
    org: Option<String>,
    /// A project slug to inventory (repeatable); with --org, in addition to the discovered ones.
    #[arg(long, value_name = "SLUG")]
    project: Vec<String>,
    /// Organization id, to list every project of a circleci/ organization.
    #[arg(long, value_name = "UUID")]
    org_id: Option<String>,
    /// At most this many requests in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Where to write the inventory (JSON); stdout when absent.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct PlanArgs {
    /// The inventory written by `rekey inventory`.
    #[arg(long, value_name = "FILE")]
    inventory: PathBuf,
    /// Extra classification rules (YAML, same format as the built-in set); they win over built-ins.
    #[arg(long, value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// metadata.name of the plan.
    #[arg(long, default_value = "circleci-incident")]
    name: String,
    /// Start of the incident window (RFC 3339).
    #[arg(long, value_name = "TIME", default_value = "2022-12-21T00:00:00Z")]
    since: chrono::DateTime<chrono::Utc>,
    /// Where to write the plan (YAML); stdout when absent.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Ask the provider who owns each credential (read-only): `aws` matches the masked last four
    /// of AWS_ACCESS_KEY_ID against the account's keys (ListUsers, ListAccessKeys) to fill
    /// principal.user. AWS credentials come from the standard chain.
    #[arg(long, value_enum, value_name = "PROVIDER")]
    discover: Vec<Discover>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Discover {
    Aws,
}

#[derive(clap::Args)]
struct ApplyArgs {
    /// The reviewed plan.
    #[arg(required_unless_present = "resume", conflicts_with = "resume")]
    plan: Option<PathBuf>,
    /// Continue this run (see `rekey status`) with the plan stored in its journal.
    #[arg(long, value_name = "RUN_ID")]
    resume: Option<String>,
    /// Read live state and print what would happen; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: exit 0 when nothing would change, 2 when changes are pending, 1 on error.
    #[arg(long, requires = "dry_run")]
    detailed_exitcode: bool,
    /// Journal, stash and lock live here (created with owner-only permissions).
    #[arg(long, default_value = ".rekey", value_name = "DIR")]
    state_dir: PathBuf,
    /// Targets rotated at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    parallelism: u16,
    /// Write a Markdown report of the run (for the incident ticket).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Rotate even credentials younger than max_age (an incident, not a schedule).
    #[arg(long)]
    ignore_max_age: bool,
    /// Rotate nothing: record live state in the plan's `observed` entries (after a stale-plan
    /// refusal) and write the refreshed plan to FILE for a new review.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dry_run", "resume"])]
    refresh: Option<PathBuf>,
    /// Only this target (repeatable).
    #[arg(long = "target", value_name = "ID")]
    only: Vec<String>,
    /// Calls per second to one service, shared by all targets: `circleci=N`, `aws-iam=N`
    /// (repeatable; 0 = unlimited). Defaults: circleci=50, aws-iam=20.
    #[arg(long = "rate-limit", value_name = "SERVICE=N", value_parser = rekey::ratelimit::parse_limit)]
    rate_limits: Vec<(String, f64)>,
    /// First pause between verification attempts of a new credential, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    verify_backoff_ms: u64,
    /// Pause between polls of a canary pipeline, in milliseconds.
    #[arg(long, default_value_t = 10_000, hide = true)]
    poll_interval_ms: u64,
    /// The new value of a target that cannot be minted by API (github-token): TARGET=FILE, or
    /// TARGET=- for one line of stdin (repeatable). Without it, rekey asks on a terminal, and
    /// otherwise leaves the target incomplete until a run that has the value.
    #[arg(long, value_name = "TARGET=FILE", value_parser = parse_value_source)]
    value_from_file: Vec<(String, rekey::providers::github::ValueSource)>,
    /// The old value of a github-token target (TARGET=FILE or TARGET=-), so that rekey revokes it
    /// through GitHub's credential-revocation API; without it, revocation is a manual step
    /// confirmed with `rekey confirm`.
    #[arg(long, value_name = "TARGET=FILE", value_parser = parse_value_source)]
    old_value_from_file: Vec<(String, rekey::providers::github::ValueSource)>,
}

/// `TARGET=FILE` (or `TARGET=-` for stdin): a file name only, never a value on the command line.
fn parse_value_source(
    text: &str,
) -> Result<(String, rekey::providers::github::ValueSource), String> {
    use rekey::providers::github::ValueSource;
    let (target, file) = text
        .split_once('=')
        .filter(|(t, f)| !t.is_empty() && !f.is_empty())
        .ok_or_else(|| "expected TARGET=FILE (or TARGET=- for stdin)".to_string())?;
    let source = if file == "-" {
        ValueSource::Stdin
    } else {
        ValueSource::File(PathBuf::from(file))
    };
    Ok((target.to_string(), source))
}

#[derive(clap::Args)]
struct ConfirmArgs {
    /// The run (see `rekey status`).
    run: String,
    /// The target whose manual step was done.
    target: String,
    /// State directory of the run.
    #[arg(long, default_value = ".rekey", value_name = "DIR")]
    state_dir: PathBuf,
}

#[derive(clap::Args)]
struct StatusArgs {
    /// State directory of the runs.
    #[arg(long, default_value = ".rekey", value_name = "DIR")]
    state_dir: PathBuf,
    /// Show this run's targets (default: the newest run).
    run: Option<String>,
}

#[derive(clap::Args)]
struct ValidateArgs {
    /// The plan to check.
    plan: PathBuf,
}

#[derive(Subcommand)]
enum AuthCommand {
    /// Store a token in the OS keyring, read from a hidden prompt (or stdin when not a terminal).
    Set { service: Service },
    /// Remove a stored token.
    Delete { service: Service },
    /// Show where each token would come from (never the token).
    Status,
}

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn input(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
    fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Inventory(args) => run_inventory(args, cli.output),
        Command::Plan(args) => run_plan(args, cli.output),
        Command::Validate(args) => run_validate(args, cli.output),
        Command::Apply(args) => run_apply(args, cli.output),
        Command::Status(args) => run_status(args, cli.output),
        Command::Confirm(args) => run_confirm(args, cli.output),
        Command::Demo => run_demo(),
        Command::Hunt(args) => hunt_cmd::run_hunt(args, cli.output),
        Command::Auth(cmd) => run_auth(cmd, cli.output),
        Command::Schema => print_schema(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("{}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
}

fn write_output(out: Option<&Path>, text: &str) -> Result<(), Failure> {
    match out {
        Some(path) => rekey::fsio::write_atomically(path, text.as_bytes())
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display()))),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn run_inventory(args: InventoryArgs, output: Output) -> Result<u8, Failure> {
    let inv = if let Some(file) = &args.from_env_inspector {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(file)
            .map_err(|e| Failure::input(format!("cannot read {name}: {e}")))?;
        inventory::env_inspector::import(&name, &text, chrono::Utc::now())
            .map_err(|d| Failure::input(d.to_string()))?
    } else {
        if args.org.is_none() && args.project.is_empty() && args.org_id.is_none() {
            return Err(Failure::input(
                "say what to inventory: --org SLUG and/or --project SLUG (live), or --from-env-inspector FILE",
            ));
        }
        live_inventory(&args)?
    };
    let json_text =
        serde_json::to_string_pretty(&inv).map_err(|e| Failure::runtime(e.to_string()))? + "\n";
    let to_stdout = args.out.is_none();
    write_output(args.out.as_deref(), &json_text)?;
    let summary = inventory_summary(&inv);
    match output {
        Output::Json if !to_stdout => print_json(&json!({
            "out": args.out.as_ref().map(|p| p.display().to_string()),
            "projects": inv.projects.len(),
            "contexts": inv.contexts.len(),
            "variables": inv.variable_count(),
            "errors": inv.errors,
        })),
        // The inventory itself is on stdout: keep the summary on stderr.
        _ if to_stdout => eprint!("{summary}"),
        _ => print!("{summary}"),
    }
    Ok(0)
}

fn inventory_summary(inv: &Inventory) -> String {
    let mut text = format!(
        "Inventory: {} projects, {} contexts, {} variables, {} checkout keys, {} places not read.\n",
        inv.projects.len(),
        inv.contexts.len(),
        inv.variable_count(),
        inv.projects
            .iter()
            .map(|p| p.checkout_keys.len())
            .sum::<usize>(),
        inv.errors.len()
    );
    if !inv.errors.is_empty() {
        let mut table = Table::new(["SCOPE", "NAME", "STATUS", "MESSAGE"]);
        for e in &inv.errors {
            table.row([
                format!("{:?}", e.scope).to_lowercase(),
                e.name.clone(),
                e.status.map(|s| s.to_string()).unwrap_or_default(),
                e.message.clone(),
            ]);
        }
        text.push_str("\nNot read (these places are NOT covered by a plan):\n");
        text.push_str(&table.render());
    }
    text
}

fn live_inventory(args: &InventoryArgs) -> Result<Inventory, Failure> {
    let token = credentials::token(Service::Circleci).map_err(|e| Failure::input(e.to_string()))?;
    let client = rekey::circleci::CircleCiClient::from_env(token)
        .map_err(|e| Failure::input(e.to_string()))?;
    let options = inventory::live::LiveOptions {
        org: args.org.clone(),
        projects: args.project.clone(),
        org_id: args.org_id.clone(),
        concurrency: usize::from(args.concurrency),
    };
    runtime()?
        .block_on(inventory::live::take_live(&client, &options))
        .map_err(|e| Failure::runtime(e.to_string()))
}

fn load_inventory(path: &Path) -> Result<Inventory, Failure> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::input(format!("cannot read {name}: {e}")))?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let full = inner.to_string();
        let message = full.split(" at line ").next().unwrap_or(&full);
        let d = Diagnostic::error(
            &name,
            &text,
            inner.line() as u32,
            inner.column() as u32,
            format!("not a rekey inventory: at `{at}`: {message}"),
        );
        Failure::input(d.to_string())
    })
}

fn run_plan(args: PlanArgs, output: Output) -> Result<u8, Failure> {
    let inv = load_inventory(&args.inventory)?;
    let mut rules = RuleSet::builtin().map_err(|e| Failure::runtime(e.to_string()))?;
    for path in &args.rules {
        let user = RuleSet::load_file(path).map_err(|e| Failure::input(e.to_string()))?;
        rules = rules.extend(user);
    }
    let classification = classify::classify(&inv, &rules);
    let options = BuildOptions {
        name: args.name.clone(),
        since: args.since,
    };
    let mut draft = plan::build::build(&inv, classification, &options);
    // The plan holds everything from here on; at 10,000 projects the inventory is worth freeing.
    drop(inv);
    let mut resolutions = Vec::new();
    if args.discover.contains(&Discover::Aws) {
        let listing = runtime()?.block_on(async {
            rekey::providers::aws::AwsIamProvider::from_env()
                .await
                .discover_users()
                .await
        });
        let listing =
            listing.map_err(|e| Failure::runtime(format!("AWS discovery failed: {e}")))?;
        resolutions = plan::discover::fill_aws_users(&mut draft, &listing);
        if output == Output::Table {
            for r in &resolutions {
                eprintln!("{}: {}", r.target, r.note);
            }
        }
    }
    let to_stdout = args.out.is_none();
    let write = |w: &mut dyn std::io::Write| {
        plan::write::write_yaml(w, &draft.plan, &draft.notes)
            .map_err(|e| std::io::Error::other(e.to_string()))
    };
    match &args.out {
        Some(path) => rekey::fsio::write_atomically_with(path, write)
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?,
        None => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            write(&mut lock)
                .and_then(|()| std::io::Write::flush(&mut lock))
                .map_err(|e| Failure::runtime(format!("cannot write the plan: {e}")))?;
        }
    }
    let p = &draft.plan;
    let review = p
        .targets
        .iter()
        .filter(|t| {
            t.principal
                .set_fields()
                .any(|(_, v)| v.as_str() == plan::REVIEW_REQUIRED)
                || t.exec.is_some()
                || t.ssh_key.is_some()
        })
        .count();
    let unconfirmed = p.targets.iter().filter(|t| !t.confirmed).count();
    match output {
        Output::Json if !to_stdout => print_json(&json!({
            "out": args.out.as_ref().map(|p| p.display().to_string()),
            "targets": p.targets.len(),
            "by_provider": by_provider(p),
            "unconfirmed": unconfirmed,
            "ignored": p.ignored.len(),
            "unclassified": p.unclassified.len(),
            "errors": p.errors.len(),
            "discovered": resolutions.iter().map(|r| json!({"target": r.target, "user": r.user, "note": r.note})).collect::<Vec<_>>(),
        })),
        _ => {
            let mut table = Table::new(["TARGET", "PROVIDER", "CONFIDENCE", "PLACES"]);
            for t in &p.targets {
                let places: Vec<String> = t
                    .bindings
                    .iter()
                    .filter_map(|b| b.place())
                    .map(|pl| pl.to_string())
                    .collect();
                table.row([
                    t.id.value.clone(),
                    t.provider.value.to_string(),
                    format!(
                        "{}{}",
                        t.confidence.as_str(),
                        if t.confirmed { "" } else { " (confirm)" }
                    ),
                    if places.is_empty() {
                        "(held by CircleCI)".to_string()
                    } else {
                        places.join(", ")
                    },
                ]);
            }
            let mut text = table.render();
            text.push_str(&format!(
                "\n{} targets ({} need decisions, {} groupings to confirm), {} unclassified, {} ignored, {} places not read.\n",
                p.targets.len(), review, unconfirmed, p.unclassified.len(), p.ignored.len(), p.errors.len()
            ));
            if let Some(out) = &args.out {
                text.push_str(&format!(
                    "Plan written to {}. Review it, then: rekey validate {}\n",
                    out.display(),
                    out.display()
                ));
            }
            if to_stdout {
                eprint!("{text}")
            } else {
                print!("{text}")
            }
        }
    }
    Ok(0)
}

fn by_provider(p: &plan::Plan) -> serde_json::Value {
    let mut counts = std::collections::BTreeMap::new();
    for t in &p.targets {
        *counts.entry(t.provider.value.as_str()).or_insert(0usize) += 1;
    }
    json!(counts)
}

fn run_validate(args: ValidateArgs, output: Output) -> Result<u8, Failure> {
    let name = args.plan.display().to_string();
    let (diagnostics, targets) = match plan::load::load_file(&args.plan) {
        Err(d) => (vec![d], 0),
        Ok((text, p)) => (plan::validate::validate(&name, &text, &p), p.targets.len()),
    };
    let errors: Vec<&Diagnostic> = diagnostics.iter().filter(|d| d.is_error()).collect();
    let warnings: Vec<&Diagnostic> = diagnostics.iter().filter(|d| !d.is_error()).collect();
    let valid = errors.is_empty();
    match output {
        Output::Json => print_json(&json!({
            "file": name,
            "valid": valid,
            "targets": targets,
            "errors": errors,
            "warnings": warnings,
        })),
        Output::Table => {
            if !diagnostics.is_empty() {
                eprintln!("{}\n", diagnostic::render_all(&diagnostics));
            }
            if valid {
                println!(
                    "{name}: valid ({targets} targets, {} warnings)",
                    warnings.len()
                );
            } else {
                eprintln!(
                    "{name}: invalid ({} errors, {} warnings)",
                    errors.len(),
                    warnings.len()
                );
            }
        }
    }
    Ok(if valid { 0 } else { 2 })
}

fn run_auth(cmd: AuthCommand, output: Output) -> Result<u8, Failure> {
    match cmd {
        AuthCommand::Set { service } => {
            let value = read_hidden(&format!("{} token (input hidden): ", service.env_var()))?;
            if value.is_empty() {
                return Err(Failure::input("empty token: nothing stored"));
            }
            credentials::store(service, &value).map_err(|e| Failure::runtime(e.to_string()))?;
            eprintln!(
                "Stored in the OS keyring; {} in the environment still takes precedence.",
                service.env_var()
            );
            Ok(0)
        }
        AuthCommand::Delete { service } => {
            credentials::forget(service).map_err(|e| Failure::runtime(e.to_string()))?;
            eprintln!("Removed from the OS keyring.");
            Ok(0)
        }
        AuthCommand::Status => {
            let rows: Vec<(String, &str)> = [Service::Circleci, Service::Github]
                .into_iter()
                .map(|s| {
                    let source = if std::env::var(s.env_var()).is_ok_and(|v| !v.trim().is_empty()) {
                        "environment"
                    } else if credentials::stored(s) {
                        "keyring"
                    } else {
                        "missing"
                    };
                    (format!("{s:?}").to_lowercase(), source)
                })
                .collect();
            match output {
                Output::Json => print_json(&json!(
                    rows.iter()
                        .map(|(s, src)| json!({"service": s, "source": src}))
                        .collect::<Vec<_>>()
                )),
                Output::Table => {
                    let mut table = Table::new(["SERVICE", "TOKEN FROM"]);
                    for (s, src) in rows {
                        table.row([s, src.to_string()]);
                    }
                    print!("{}", table.render());
                }
            }
            Ok(0)
        }
    }
}

/// A hidden prompt on a terminal; a line of stdin otherwise (for automation).
fn read_hidden(prompt: &str) -> Result<rekey::secret::Secret, Failure> {
    use std::io::IsTerminal;
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt)
            .map_err(|e| Failure::runtime(format!("cannot read the token: {e}")))?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| Failure::runtime(format!("cannot read the token: {e}")))?;
        line
    };
    Ok(rekey::secret::Secret::new(value.trim()))
}

fn print_schema() -> Result<u8, Failure> {
    println!("{}", plan::schema_json());
    Ok(0)
}

/// The outside world of a real run: CircleCI from CIRCLECI_HOST/token, AWS from its default
/// chain (AWS_ENDPOINT_URL included), the stash key from REKEY_STASH_KEY or the keyring.
/// GitHub from GITHUB_API_URL with GITHUB_TOKEN (needed by deploy-key targets only: a missing
/// token fails those targets, not the run), and the token inputs of github-token targets; GCP,
/// Azure and exec from the plan's `endpoints:` and their own credentials.
async fn real_environment(
    need_stash: bool,
    limits: &[(String, f64)],
    token_inputs: rekey::providers::github::TokenInputs,
    plan: &plan::Plan,
) -> Result<rekey::engine::run::Environment, Failure> {
    use rekey::providers::{checkout_key::CheckoutKeyProvider, github};
    use rekey::ratelimit::RateLimiter;
    use std::sync::Arc;
    let limit = |service: &str, default: f64| -> Option<Arc<RateLimiter>> {
        let rate = limits
            .iter()
            .rev()
            .find(|(s, _)| s == service)
            .map(|(_, r)| *r)
            .unwrap_or(default);
        // A burst of a second's worth lets a target's few calls go together.
        (rate > 0.0).then(|| Arc::new(RateLimiter::new(rate, rate.ceil() as u32)))
    };
    let token = credentials::token(Service::Circleci).map_err(|e| Failure::input(e.to_string()))?;
    let mut circleci = rekey::circleci::CircleCiClient::from_env(token)
        .map_err(|e| Failure::input(e.to_string()))?;
    if let Some(limiter) = limit("circleci", 50.0) {
        circleci = circleci.with_rate_limit(limiter);
    }
    let aws = rekey::providers::aws::AwsIamProvider::from_env().await;
    let aws: Arc<dyn rekey::providers::Provider> = match limit("aws-iam", 20.0) {
        Some(limiter) => Arc::new(rekey::providers::wrappers::RateLimited::new(aws, limiter)),
        None => Arc::new(aws),
    };
    let github_token = credentials::token(Service::Github).ok();
    let github_own = rekey::github::GithubClient::from_env(github_token)
        .map_err(|e| Failure::input(e.to_string()))?;
    let github_anonymous =
        rekey::github::GithubClient::from_env(None).map_err(|e| Failure::input(e.to_string()))?;
    let providers = cloud_providers(plan)?
        .with(aws)
        .with(Arc::new(github::GithubDeployKeyProvider::new(github_own)))
        .with(Arc::new(github::GithubTokenProvider::new(
            github_anonymous,
            token_inputs,
        )))
        .with(Arc::new(CheckoutKeyProvider::new(circleci.clone())))
        .with(Arc::new(rekey::providers::ssh_key::SshKeyProvider::new(
            circleci.clone(),
        )));
    let stash_key = if need_stash {
        rekey::engine::stash::StashKey::from_env_or_keyring()
            .map_err(|e| Failure::input(e.to_string()))?
    } else {
        // A dry run mints nothing: a throwaway key keeps it away from the keyring.
        rekey::engine::stash::StashKey::generate().map_err(|e| Failure::runtime(e.to_string()))?
    };
    Ok(rekey::engine::run::Environment {
        circleci,
        providers,
        stash_key,
        hunt_aws: None,
    })
}

/// The providers besides AWS (whose SDK finds its own endpoint), the GCP and Azure ones pointed at the plan's `endpoints:`.
/// rekey's own GCP and Azure credentials come from the standard variables; a broken
/// `GOOGLE_APPLICATION_CREDENTIALS` stops the run only when the plan has a GCP target.
fn cloud_providers(plan: &plan::Plan) -> Result<rekey::engine::run::ProviderSet, Failure> {
    use rekey::providers::{azure, exec, gcp};
    use std::sync::Arc;
    let has = |kind: plan::ProviderKind| plan.targets.iter().any(|t| t.provider.value == kind);
    let gcp_auth = match gcp::GcpAuth::from_env() {
        Ok(auth) => auth,
        Err(e) if has(plan::ProviderKind::GcpSaKey) => return Err(Failure::input(e)),
        Err(_) => gcp::GcpAuth::None,
    };
    let gcp = gcp::GcpSaKeyProvider::new(&plan.endpoints, gcp_auth)
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let azure =
        azure::AzureAppSecretProvider::new(&plan.endpoints, azure::AzureIdentity::from_env())
            .map_err(|e| Failure::runtime(e.to_string()))?;
    Ok(rekey::engine::run::ProviderSet::default()
        .with(Arc::new(gcp))
        .with(Arc::new(azure))
        .with(Arc::new(exec::ExecProvider::new())))
}

fn event_sink(
    output: Output,
    targets: usize,
) -> std::sync::Arc<dyn rekey::engine::events::EventSink> {
    use rekey::engine::events::{Bars, JsonLines, PlainLines};
    use std::io::IsTerminal;
    match output {
        Output::Json => std::sync::Arc::new(JsonLines),
        Output::Table if std::io::stderr().is_terminal() => std::sync::Arc::new(Bars::new(targets)),
        Output::Table => std::sync::Arc::new(PlainLines),
    }
}

/// The token inputs of an apply: files and stdin as given, a hidden prompt on a terminal.
fn token_inputs(args: &ApplyArgs) -> Result<rekey::providers::github::TokenInputs, Failure> {
    use rekey::providers::github::ValueSource;
    use std::io::IsTerminal;
    let stdin_users = args
        .value_from_file
        .iter()
        .chain(&args.old_value_from_file)
        .filter(|(_, s)| matches!(s, ValueSource::Stdin))
        .count();
    if stdin_users > 1 {
        return Err(Failure::input(
            "only one --value-from-file / --old-value-from-file may read stdin (TARGET=-)",
        ));
    }
    Ok(rekey::providers::github::TokenInputs {
        new: args.value_from_file.iter().cloned().collect(),
        old: args.old_value_from_file.iter().cloned().collect(),
        // A prompt needs a person at a terminal, and stdin free for them.
        prompt: stdin_users == 0
            && std::io::stdin().is_terminal()
            && std::io::stderr().is_terminal(),
    })
}

fn run_confirm(args: ConfirmArgs, output: Output) -> Result<u8, Failure> {
    let done =
        rekey::engine::run::confirm(&args.state_dir, &args.run, &args.target).map_err(|e| {
            Failure {
                code: match e {
                    rekey::engine::EngineError::NothingToConfirm { .. } => 2,
                    ref other => engine_code(other),
                },
                message: e.to_string(),
            }
        })?;
    match output {
        Output::Json => print_json(&json!(done)),
        Output::Table => println!(
            "Confirmed for {} of run {}: {}\nNext: `rekey apply --resume {} --state-dir {}` finishes the target.",
            done.target,
            done.run,
            done.step,
            done.run,
            args.state_dir.display()
        ),
    }
    Ok(0)
}

fn run_apply(args: ApplyArgs, output: Output) -> Result<u8, Failure> {
    let rt = runtime()?;
    let inputs = token_inputs(&args)?;
    let options = rekey::engine::run::ApplyOptions {
        state_dir: args.state_dir.clone(),
        parallelism: usize::from(args.parallelism),
        ignore_max_age: args.ignore_max_age,
        only: args.only.clone(),
        verify_backoff: std::time::Duration::from_millis(args.verify_backoff_ms),
        poll_interval: std::time::Duration::from_millis(args.poll_interval_ms),
    };
    if let Some(run_id) = &args.resume {
        // The stored plan's endpoints configure GCP and Azure. A run that cannot be read here
        // is left for `resume` to report, after it has checked the state directory's lock.
        let stored = match rekey::engine::run::stored_plan(&args.state_dir, run_id) {
            Ok(plan) => plan,
            Err(_) => plan::load::parse(
                "(no stored plan)",
                "apiVersion: rekey/v1\nkind: RotationPlan\nmetadata: {name: resume}\n",
            )
            .map_err(|d| Failure::runtime(d.message))?,
        };
        let env = rt.block_on(real_environment(
            true,
            &args.rate_limits,
            inputs.clone(),
            &stored,
        ))?;
        let sink = event_sink(output, 0);
        let report = rt
            .block_on(rekey::engine::run::resume(run_id, env, options, sink))
            .map_err(|e| Failure {
                code: engine_code(&e),
                message: e.to_string(),
            })?;
        return finish_apply(&report, args.report.as_deref(), output);
    }
    let Some(plan_path) = &args.plan else {
        return Err(Failure::input("name a plan, or --resume RUN_ID"));
    };
    let name = plan_path.display().to_string();
    let (text, plan) =
        plan::load::load_file(plan_path).map_err(|d| Failure::input(d.to_string()))?;
    let diagnostics = plan::validate::validate(&name, &text, &plan);
    if diagnostics.iter().any(|d| d.is_error()) {
        return Err(Failure::input(format!(
            "{}\n\n{name}: invalid plan; nothing was done (see `rekey validate {name}`)",
            diagnostic::render_all(&diagnostics)
        )));
    }
    if let Some(out) = &args.refresh {
        let env = rt.block_on(real_environment(
            false,
            &args.rate_limits,
            inputs.clone(),
            &plan,
        ))?;
        let mut refreshed = plan;
        let changes = rt
            .block_on(plan::refresh::refresh_observed(
                &mut refreshed,
                &env.circleci,
            ))
            .map_err(Failure::runtime)?;
        let yaml = plan::write::to_yaml(&refreshed, &Default::default())
            .map_err(|e| Failure::runtime(e.to_string()))?;
        write_output(Some(out), &yaml)?;
        match output {
            Output::Json => {
                print_json(&json!({"out": out.display().to_string(), "changes": changes}))
            }
            Output::Table => {
                for c in &changes {
                    println!("{c}");
                }
                println!(
                    "{} observation(s) changed; refreshed plan written to {}. Review it (the change may be someone else's rotation), then apply it.",
                    changes.len(),
                    out.display()
                );
            }
        }
        return Ok(0);
    }
    if args.dry_run {
        let env = rt.block_on(real_environment(
            false,
            &args.rate_limits,
            inputs.clone(),
            &plan,
        ))?;
        // With the journal (read-only): a target an earlier run already rotated is "done", not stale.
        let preview = rt.block_on(rekey::engine::dryrun::preview_with_history(
            &plan,
            &env.circleci,
            &env.providers,
            args.ignore_max_age,
            Some(&args.state_dir),
        ));
        match output {
            Output::Json => print_json(&json!(preview)),
            Output::Table => print!("{}", render_preview(&preview)),
        }
        return Ok(if args.detailed_exitcode {
            preview.detailed_exit_code()
        } else if preview.detailed_exit_code() == 1 {
            1
        } else {
            0
        });
    }
    let env = rt.block_on(real_environment(
        true,
        &args.rate_limits,
        inputs.clone(),
        &plan,
    ))?;
    let sink = event_sink(output, plan.targets.len());
    let report = rt
        .block_on(rekey::engine::run::apply(
            &name, &text, plan, env, options, sink,
        ))
        .map_err(|e| Failure {
            code: engine_code(&e),
            message: e.to_string(),
        })?;
    finish_apply(&report, args.report.as_deref(), output)
}

fn engine_code(e: &rekey::engine::EngineError) -> u8 {
    match e {
        rekey::engine::EngineError::Lock(_) | rekey::engine::EngineError::NoSuchRun(_) => 2,
        _ => 1,
    }
}

fn finish_apply(
    report: &rekey::engine::run::RunReport,
    report_file: Option<&Path>,
    output: Output,
) -> Result<u8, Failure> {
    if let Some(path) = report_file {
        write_output(Some(path), &rekey::report::run::markdown(report))?;
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string(&json!({"summary": report})).unwrap_or_default()
        ),
        Output::Table => {
            println!("\nRun {} ({:?})", report.run, report.status);
            print!("{}", rekey::report::run::summary_table(report));
        }
    }
    Ok(report.exit_code())
}

fn render_preview(preview: &rekey::engine::dryrun::Preview) -> String {
    use rekey::engine::dryrun::Action;
    let mut out = format!("Dry run of plan {}: nothing is changed.\n", preview.plan);
    for t in &preview.targets {
        out.push_str(&format!("\n{} ({})", t.id, t.provider));
        match &t.action {
            Action::Rotate => out.push_str(": would rotate\n"),
            Action::Skip(why) => out.push_str(&format!(": would skip — {why}\n")),
            Action::Blocked(why) => out.push_str(&format!(": WOULD FAIL — {why}\n")),
        }
        if let Some(p) = &t.principal {
            out.push_str(&format!("  principal: {p}\n"));
        }
        for c in &t.credentials {
            let age = c
                .created_at
                .map(|at| format!("{}d old", (chrono::Utc::now() - at).num_days()))
                .unwrap_or_else(|| "age unknown".into());
            let used = c
                .last_used
                .map(|at| format!("last used {}", at.to_rfc3339()))
                .unwrap_or_else(|| "never used".into());
            let current = if t.current.as_deref() == Some(c.id.as_str()) {
                " (in use)"
            } else {
                ""
            };
            out.push_str(
                &format!(
                    "  credential {}{current}: {:?}, {age}, {used}\n",
                    c.id, c.status
                )
                .replace("Active", "active")
                .replace("Inactive", "inactive"),
            );
        }
        for b in &t.bindings {
            out.push_str(&format!("  {}: {}\n", b.place, b.vars.join(", ")));
        }
        for (i, s) in t.steps.iter().enumerate() {
            let mark = if s.problem.is_some() { "✗" } else { " " };
            out.push_str(&format!(
                "  {mark} {:>2}. {:<10} {}\n",
                i + 1,
                s.step.as_str(),
                s.description
            ));
            if let Some(p) = &s.problem {
                out.push_str(&format!("        would fail: {p}\n"));
            }
        }
    }
    out
}

fn run_status(args: StatusArgs, output: Output) -> Result<u8, Failure> {
    use rekey::engine::journal::{Journal, RunId};
    if !args.state_dir.exists() {
        println!("No runs: {} does not exist.", args.state_dir.display());
        return Ok(0);
    }
    let journal = Journal::open(&args.state_dir).map_err(|e| Failure::runtime(e.to_string()))?;
    let runs = journal
        .runs()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let selected = match &args.run {
        Some(id) => Some(
            runs.iter()
                .find(|r| r.id.to_string() == *id)
                .cloned()
                .ok_or_else(|| {
                    Failure::input(format!("no run {id} in {}", args.state_dir.display()))
                })?,
        ),
        None => runs.first().cloned(),
    };
    // Per target of the selected run: its state, the last step journaled, what is pending.
    let mut rows = Vec::new();
    if let Some(run) = &selected {
        let id: RunId = run.id.clone();
        let states = journal
            .target_states(&id)
            .map_err(|e| Failure::runtime(e.to_string()))?;
        let record = journal
            .run(&id)
            .map_err(|e| Failure::runtime(e.to_string()))?;
        let targets: Vec<String> = record
            .and_then(|r| plan::load::parse(&r.plan_file, &r.plan_text).ok())
            .map(|p| p.targets.iter().map(|t| t.id.value.clone()).collect())
            .unwrap_or_else(|| states.iter().map(|s| s.target.clone()).collect());
        for target in targets {
            let last = journal
                .last(&id, &target)
                .map_err(|e| Failure::runtime(e.to_string()))?;
            let state = states.iter().find(|s| s.target == target);
            let state_name = match (state, &last) {
                (Some(s), _) => s.state.clone(),
                (None, Some(_)) => "in progress".to_string(),
                (None, None) => "not started".to_string(),
            };
            let step = last
                .as_ref()
                .map(|e| format!("{} {}", e.step, e.phase.as_str()))
                .unwrap_or_default();
            let pending = match state {
                Some(s) if s.state == "waiting" => s
                    .waiting_until
                    .map(|u| format!("revoke the old credential after {}", u.to_rfc3339()))
                    .unwrap_or_default(),
                Some(s) if s.state == "done" => String::new(),
                Some(s) => s.message.clone().unwrap_or_default(),
                None if last.is_some() => "resume to continue".to_string(),
                None => String::new(),
            };
            rows.push(json!({"target": target, "state": state_name, "last_step": step, "pending": pending}));
        }
    }
    match output {
        Output::Json => print_json(
            &json!({"runs": runs, "selected": selected.as_ref().map(|r| r.id.to_string()), "targets": rows}),
        ),
        Output::Table => {
            if runs.is_empty() {
                println!("No runs in {}.", args.state_dir.display());
                return Ok(0);
            }
            let mut table = Table::new(["RUN", "PLAN", "STARTED", "STATUS"]);
            for r in &runs {
                table.row([
                    r.id.to_string(),
                    r.plan_name.clone(),
                    r.created_at.to_rfc3339(),
                    format!("{:?}", r.status).to_lowercase(),
                ]);
            }
            print!("{}", table.render());
            if let Some(run) = &selected {
                println!("\nTargets of {}:", run.id);
                let mut table = Table::new(["TARGET", "STATE", "LAST STEP", "PENDING"]);
                for r in &rows {
                    let cell = |k: &str| r[k].as_str().unwrap_or_default().to_string();
                    table.row([
                        cell("target"),
                        cell("state"),
                        cell("last_step"),
                        cell("pending"),
                    ]);
                }
                print!("{}", table.render());
            }
        }
    }
    Ok(0)
}

/// `rekey demo`: the whole flow against the in-process simulators of CircleCI and AWS.
fn run_demo() -> Result<u8, Failure> {
    let rt = runtime()?;
    rt.block_on(demo())
}

async fn demo() -> Result<u8, Failure> {
    use rekey::engine::run::{ApplyOptions, Environment, ProviderSet};
    use rekey::sandbox::demo;
    use std::sync::Arc;
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Failure::runtime(format!("demo: {what}: {e}"));
    println!(
        "rekey demo — a made-up organization, gh/acme, in in-process simulators of CircleCI, AWS"
    );
    println!(
        "IAM/STS, GCP IAM and Azure Entra ID/Graph on 127.0.0.1, plus a made-up token owner driven"
    );
    println!(
        "by the exec provider. Real protocols, real AWS SDK calls, nothing leaves this machine.\n"
    );
    let world = demo::start()
        .await
        .map_err(|e| fail("starting the simulators", &e))?;
    // GCP, Azure and an exec owner: their credentials replace the demo org's fakes.
    let cloud = rekey::sandbox::demo_cloud::CloudDemo::start(&world.circleci)
        .await
        .map_err(|e| fail("starting the GCP and Azure simulators", &e))?;
    let token = rekey::secret::Secret::new(world.circleci.state().token());
    let client = rekey::circleci::CircleCiClient::new(&world.circleci.base_url(), token)
        .map_err(|e| fail("CircleCI client", &e))?;
    let aws = rekey::providers::aws::AwsIamProvider::new(&world.aws.sdk_config());

    println!("1. Inventory (CircleCI API: projects, variables, checkout keys, contexts)");
    let options = inventory::live::LiveOptions {
        org: Some("gh/acme".into()),
        ..Default::default()
    };
    let inv = inventory::live::take_live(&client, &options)
        .await
        .map_err(|e| fail("inventory", &e))?;
    print!("   {}", inventory_summary(&inv));

    println!("\n2. Plan (classification, then `--discover aws` fills IAM users from key ids)");
    let rules = RuleSet::builtin().map_err(|e| fail("rules", &e))?;
    let mut draft = plan::build::build(
        &inv,
        classify::classify(&inv, &rules),
        &BuildOptions::default(),
    );
    let listing = aws
        .discover_users()
        .await
        .map_err(|e| fail("discovery", &e))?;
    for r in plan::discover::fill_aws_users(&mut draft, &listing) {
        println!("   {}: {}", r.target, r.note);
    }
    println!(
        "   {} targets, {} unclassified, {} ignored. This demo rotates the AWS keys and one target of each other provider (GitHub deploy key, checkout key, GitHub token, GCP, Azure, exec); the others stay for review.",
        draft.plan.targets.len(),
        draft.plan.unclassified.len(),
        draft.plan.ignored.len()
    );
    // The reviewer's part, done here for the demo: keep the AWS targets rekey can rotate, fill
    // what discovery could not (a context shows no key id), mark the old key removable, add a
    // canary, and shorten the grace period so the demo ends.
    let mut plan = draft.plan.clone();
    plan.targets.retain(|t| {
        t.provider.value == plan::ProviderKind::AwsIam
            && !t
                .bindings
                .iter()
                .any(|b| b.vars.values().any(|v| v.starts_with("LEGACY_")))
    });
    for t in &mut plan.targets {
        let in_context = t
            .bindings
            .iter()
            .any(|b| b.context.as_ref().is_some_and(|c| c.as_str() == "aws-prod"));
        if in_context {
            t.principal.user = Some(plan::Located::new("release-bot".into()));
            t.confirmed = true;
            println!(
                "   reviewer: {} (context aws-prod) belongs to IAM user release-bot",
                t.id
            );
        }
        if t.principal
            .user
            .as_ref()
            .is_some_and(|u| u.as_str() == "prod-deployer")
        {
            t.policy.removable_keys = vec![plan::Located::new(world.removable_key.clone())];
            println!(
                "   reviewer: {} may delete the unused old key {} to make room",
                t.id, world.removable_key
            );
        }
        if t.bindings.iter().any(|b| {
            b.project
                .as_ref()
                .is_some_and(|p| p.as_str() == "gh/acme/api")
        }) {
            t.policy.canary = Some(plan::Canary {
                project: plan::Located::new("gh/acme/api".into()),
                branch: "main".into(),
                timeout: None,
            });
            println!(
                "   reviewer: {} must pass a canary pipeline of gh/acme/api before the old key is disabled",
                t.id
            );
        }
    }
    // The GitHub side, as a reviewer would write it: the repository's deploy key (its private
    // key in a project variable), the project's checkout key, and a personal access token
    // (whose new value a person supplies: here in process, as `--value-from-file` would).
    let github_targets = format!(
        "- id: github-deploy-key-api
  provider: github-deploy-key
  principal: {{repository: acme/api, title: rekey demo}}
  bindings:
    - project: gh/acme/api
      vars: {{private_key: {var}}}
      encoding: {{private_key: base64}}
- id: checkout-key-api
  provider: circleci-checkout-key
  principal: {{project: gh/acme/api}}
- id: github-token-api
  provider: github-token
  principal: {{user: release-bot}}
  bindings:
    - project: gh/acme/api
      vars: {{token: GITHUB_TOKEN}}
",
        var = demo::DEPLOY_KEY_VAR
    );
    let extra: Vec<plan::Target> =
        serde_saphyr::from_str(&github_targets).map_err(|e| fail("GitHub targets", &e))?;
    for t in &extra {
        println!(
            "   reviewer: adds {} ({}), with grace 0s like the rest",
            t.id, t.provider.value
        );
    }
    plan.targets.extend(extra);
    // One target of each other provider, as the reviewer writes them, with the simulators'
    // endpoints.
    for t in cloud.targets() {
        println!(
            "   reviewer: {} ({}) rotates {}",
            t.id,
            t.provider.value,
            t.bindings
                .iter()
                .flat_map(|b| b.vars.values().map(|v| v.value.clone()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        plan.targets.push(t);
    }
    plan.endpoints = cloud.endpoints();
    plan.defaults.grace = plan::Located::new(plan::PlanDuration(0));
    // Hunts: CloudTrail's event history through LookupEvents, narrowed to each AWS key; the
    // simulator delivers at once, so no delivery delay.
    plan.incident.since = plan::Located::new(demo::incident_start());
    plan.hunts.sources.cloudtrail = vec![plan::Located::new("api".into())];
    plan.hunts.delivery_delay.insert(
        "cloudtrail".into(),
        plan::Located::new(plan::PlanDuration(0)),
    );
    println!(
        "   reviewer: hunts read CloudTrail through LookupEvents (`hunts.sources.cloudtrail: [api]`); findings before a rotation are recorded and the rotation goes on (on_findings.pre: continue)"
    );
    let text =
        plan::write::to_yaml(&plan, &draft.notes).map_err(|e| fail("writing the plan", &e))?;
    let reparsed = plan::load::parse("demo-plan.yaml", &text)
        .map_err(|d| fail("reading the plan back", &d))?;
    let problems: Vec<Diagnostic> = plan::validate::validate("demo-plan.yaml", &text, &reparsed)
        .into_iter()
        .filter(|d| d.is_error())
        .collect();
    if !problems.is_empty() {
        return Err(fail(
            "validating the plan",
            &diagnostic::render_all(&problems),
        ));
    }
    println!(
        "   validate: the plan is valid ({} targets, grace 0s for the demo; 24h by default)",
        reparsed.targets.len()
    );

    let github_client = rekey::github::GithubClient::new(
        &world.github.base_url(),
        Some(rekey::secret::Secret::new(world.github.admin_token())),
    )
    .map_err(|e| fail("GitHub client", &e))?;
    let anonymous = rekey::github::GithubClient::new(&world.github.base_url(), None)
        .map_err(|e| fail("GitHub client", &e))?;
    let token_inputs = {
        use rekey::providers::github::{TokenInputs, ValueSource};
        TokenInputs {
            new: [(
                "github-token-api".to_string(),
                ValueSource::Value(world.new_github_token.clone()),
            )]
            .into(),
            old: [(
                "github-token-api".to_string(),
                ValueSource::Value(world.old_github_token.clone()),
            )]
            .into(),
            prompt: false,
        }
    };
    let mut providers = ProviderSet::default()
        .with(Arc::new(aws))
        .with(Arc::new(
            rekey::providers::github::GithubDeployKeyProvider::new(github_client),
        ))
        .with(Arc::new(
            rekey::providers::github::GithubTokenProvider::new(anonymous, token_inputs),
        ))
        .with(Arc::new(
            rekey::providers::checkout_key::CheckoutKeyProvider::new(client.clone()),
        ))
        .with(Arc::new(rekey::providers::ssh_key::SshKeyProvider::new(
            client.clone(),
        )));
    for p in cloud
        .providers()
        .map_err(|e| fail("GCP and Azure providers", &e))?
    {
        providers = providers.with(p);
    }
    println!("\n3. Dry run (reads live state, changes nothing)");
    let preview = rekey::engine::dryrun::preview(&reparsed, &client, &providers, false).await;
    for line in render_preview(&preview).lines().skip(2) {
        println!("   {line}");
    }

    println!(
        "\n4. Apply, with faults injected: CircleCI answers 429 (Retry-After) to a write, AWS fails a CreateAccessKey with 500"
    );
    let _ = world
        .circleci
        .throttle("/envvar$", 1, std::time::Duration::from_secs(1));
    let _ = world.aws.fail_next("CreateAccessKey", 1);
    let state_dir = std::env::temp_dir().join(format!("rekey-demo-{}", std::process::id()));
    let options = ApplyOptions {
        state_dir: state_dir.clone(),
        verify_backoff: std::time::Duration::from_millis(100),
        poll_interval: std::time::Duration::from_millis(200),
        ..Default::default()
    };
    let stash_key =
        rekey::engine::stash::StashKey::generate().map_err(|e| fail("stash key", &e))?;
    let env = Environment {
        circleci: client.clone(),
        providers: providers.clone(),
        stash_key,
        hunt_aws: Some(world.aws.sdk_config()),
    };
    let events = Arc::new(Recorded::default());
    let report = rekey::engine::run::apply(
        "demo-plan.yaml",
        &text,
        reparsed,
        env,
        options,
        events.clone(),
    )
    .await
    .map_err(|e| fail("apply", &e))?;
    let throttled = world
        .circleci
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    let failed = world
        .aws
        .requests()
        .iter()
        .filter(|r| r.status >= 500)
        .count();
    println!(
        "   Faults survived: CircleCI answered 429 {throttled}× (rekey waited for Retry-After), AWS answered 500 {failed}× (rekey retried); no credential was minted twice."
    );
    println!("\n5. Report");
    println!("   Run {} ({:?})", report.run, report.status);
    for line in rekey::report::run::summary_table(&report).lines() {
        println!("   {line}");
    }
    for h in report.hunts.iter().filter(|h| h.findings > 0) {
        println!(
            "\n   {} {}-rotation hunt: {} finding(s), highest {} (CloudTrail via LookupEvents):",
            h.target,
            h.phase,
            h.findings,
            h.highest.map(|s| s.to_string()).unwrap_or_default()
        );
        for (rule, severity, n) in &h.per_rule {
            println!("     {n:>3} × {:<6} {rule}", severity.as_str());
        }
    }
    println!("\n   Checks against the simulators:");
    for (place, works) in world
        .bindings_work()
        .into_iter()
        .chain(cloud.bindings_work(&world.circleci))
    {
        println!(
            "   {} {place}: {}",
            if works { "✓" } else { "✗" },
            if works {
                "holds a working key"
            } else {
                "does NOT hold a working key"
            }
        );
    }
    for (what, ok) in world.github_checks() {
        println!(
            "   {} {what}{}",
            if ok { "✓" } else { "✗" },
            if ok { "" } else { ": NOT as expected" }
        );
    }
    for user in ["ci-deployer", "prod-deployer", "release-bot"] {
        let keys = world.aws.keys_of(user);
        println!(
            "   {user}: {} key(s), {} active",
            keys.len(),
            keys.iter()
                .filter(|k| k.status == rekey::sandbox::aws::KeyStatus::Active)
                .count()
        );
    }
    let markdown = rekey::report::run::markdown(&report);
    println!("\n   The Markdown report for the incident ticket (`--report FILE`) begins:");
    for line in markdown.lines().take(8) {
        println!("   | {line}");
    }
    // Secret hygiene, checked on the spot: every value now in a binding (the new credentials)
    // and every AWS secret ever issued (old ones included), raw and base64, searched in every
    // file of the state directory (journal, stash, lock), the report and every progress line.
    let mut secrets: Vec<String> = Vec::new();
    {
        let state = world.circleci.state();
        for t in &plan.targets {
            for b in &t.bindings {
                for var in b.vars.values() {
                    let value = match b.place() {
                        Some(plan::Place::Project(slug)) => state
                            .project_by_slug(slug)
                            .and_then(|p| p.env_vars.get(var.as_str())),
                        Some(plan::Place::Context(name)) => state
                            .context_by_name(name)
                            .and_then(|c| c.vars.get(var.as_str())),
                        None => None,
                    };
                    // Ids are public (an AWS key id shows in CloudTrail); only secrets count.
                    if let Some(v) =
                        value.filter(|v| v.value.len() >= 16 && !v.value.starts_with("AKIA"))
                    {
                        secrets.push(v.value.clone());
                    }
                }
            }
        }
    }
    secrets.extend(
        world
            .aws
            .state()
            .issued_secrets()
            .iter()
            .map(|s| s.expose().to_string()),
    );
    let mut haystacks: Vec<Vec<u8>> =
        vec![markdown.clone().into_bytes(), events.text().into_bytes()];
    let mut files = 0;
    // Every file below the state directory: journal, stash, lock, hunt findings.
    let mut dirs = vec![state_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                haystacks.push(bytes);
            }
        }
    }
    use base64::Engine as _;
    let found = secrets
        .iter()
        .flat_map(|s| {
            [
                s.clone(),
                base64::engine::general_purpose::STANDARD.encode(s),
            ]
        })
        .filter(|needle| {
            haystacks
                .iter()
                .any(|h| h.windows(needle.len()).any(|w| w == needle.as_bytes()))
        })
        .count();
    println!(
        "\n   Secret hygiene: {} secret values (new and old, raw and base64) searched in {files} state files, the report and {} progress lines: {found} found.",
        secrets.len() * 2,
        events.count()
    );
    let _ = std::fs::remove_dir_all(&state_dir);
    if found > 0 {
        return Err(Failure::runtime(
            "demo: a secret reached the state directory, the report or the progress output",
        ));
    }
    println!(
        "\nNext: `rekey inventory --org gh/<yours> --out inventory.json` — see the README, \"Rotating for real\"."
    );
    // The demo's own outcome: its hunt findings are the point of the show, not a failure
    // (`rekey apply` itself exits 3 on them).
    Ok(match report.exit_code() {
        3 => 0,
        code => code,
    })
}

/// Progress lines of the demo, printed as usual and kept for the demo's secret-hygiene check.
#[derive(Default)]
struct Recorded {
    lines: std::sync::Mutex<Vec<String>>,
}

impl Recorded {
    fn text(&self) -> String {
        self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    fn count(&self) -> usize {
        self.lines.lock().map(|l| l.len()).unwrap_or_default()
    }
}

impl rekey::engine::events::EventSink for Recorded {
    fn event(&self, e: &rekey::engine::events::Event<'_>) {
        rekey::engine::events::PlainLines.event(e);
        if let Ok(line) = serde_json::to_string(e) {
            if let Ok(mut lines) = self.lines.lock() {
                lines.push(line);
            }
        }
    }
}
