//! The `rekey` command line: parse arguments, call the library, print results, map errors to
//! exit codes (0 success, 1 failure, 2 invalid input or usage, 3 hunt findings, 4 incomplete).

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

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
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
    let draft = plan::build::build(&inv, classification, &options);
    let yaml = plan::write::to_yaml(&draft.plan, &draft.notes)
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let to_stdout = args.out.is_none();
    write_output(args.out.as_deref(), &yaml)?;
    let p = &draft.plan;
    let review = p
        .targets
        .iter()
        .filter(|t| {
            t.principal
                .set_fields()
                .any(|(_, v)| v.as_str() == plan::REVIEW_REQUIRED)
                || t.exec.is_some()
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
