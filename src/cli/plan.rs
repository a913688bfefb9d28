//! `rekey plan`: its arguments, reading the inventory (with located errors), classifying,
//! optional owner discovery, writing the plan and the table of its targets.

use super::output::{Failure, Output, print_json, runtime};
use crate::classify::{self, RuleSet};
use crate::diagnostic::Diagnostic;
use crate::inventory::Inventory;
use crate::plan::{self, build::BuildOptions};
use crate::report::Table;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct PlanArgs {
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
    /// Write a scheduled plan (no `incident`): only credentials older than max_age are due.
    #[arg(long, conflicts_with = "since")]
    schedule: bool,
    /// Where to write the plan (YAML); stdout when absent.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Ask the provider who owns each credential (read-only): `aws` matches the masked last four
    /// of AWS_ACCESS_KEY_ID against the account's keys (ListUsers, ListAccessKeys) to fill
    /// principal.user. AWS credentials come from the standard chain.
    #[arg(long, value_enum, value_name = "PROVIDER")]
    discover: Vec<Discover>,
    /// Write a directory of plan files (--out DIR), one per project, context, provider or team
    /// (--teams), with an index.yaml, for review shared by owners; `validate` and `apply` take
    /// the directory.
    #[arg(long, value_enum, value_name = "BY", requires = "out")]
    split_by: Option<SplitByArg>,
    /// With --split-by team: a YAML or JSON map from project slug (or context name) to team.
    #[arg(long, value_name = "FILE")]
    teams: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SplitByArg {
    Project,
    Context,
    Provider,
    Team,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Discover {
    Aws,
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

pub fn run(args: PlanArgs, output: Output) -> Result<u8, Failure> {
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
        schedule: args.schedule,
    };
    let mut draft = plan::build::build(&inv, classification, &options);
    // The plan holds everything from here on; at 10,000 projects the inventory is worth freeing.
    drop(inv);
    let mut resolutions = Vec::new();
    if args.discover.contains(&Discover::Aws) {
        let listing = runtime()?.block_on(crate::providers::registry::discover_aws_users());
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
    match (&args.out, args.split_by) {
        (Some(dir), Some(by)) => write_split(dir, by, args.teams.as_deref(), &draft)?,
        (Some(path), None) => crate::fsio::write_atomically_with(path, write)
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?,
        (None, _) => {
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
    // The process ends after this command: freeing 190,000 targets one allocation at a time
    // was a tenth of `rekey plan` on the realistic benchmark, for memory the exit returns anyway.
    // (A plan holds no secret value, so nothing needs zeroing on drop.)
    std::mem::forget(draft);
    Ok(0)
}

/// `rekey plan --split-by`: the draft as a directory of plan files with an index.
fn write_split(
    dir: &Path,
    by: SplitByArg,
    teams: Option<&Path>,
    draft: &plan::build::Draft,
) -> Result<(), Failure> {
    use plan::split::{SplitBy, Teams};
    let by = match by {
        SplitByArg::Project => SplitBy::Project,
        SplitByArg::Context => SplitBy::Context,
        SplitByArg::Provider => SplitBy::Provider,
        SplitByArg::Team => SplitBy::Team,
    };
    let teams = match teams {
        Some(path) => {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::input(format!("cannot read {name}: {e}")))?;
            Teams::parse(&name, &text).map_err(|d| Failure::input(d.to_string()))?
        }
        None if by == SplitBy::Team => {
            return Err(Failure::input(
                "--split-by team needs --teams FILE (a map from project slug to team)",
            ));
        }
        None => Teams::default(),
    };
    plan::split::write_split(dir, &draft.plan, by, &teams, &draft.notes)
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", dir.display())))
}

fn by_provider(p: &plan::Plan) -> serde_json::Value {
    let mut counts = std::collections::BTreeMap::new();
    for t in &p.targets {
        *counts.entry(t.provider.value.as_str()).or_insert(0usize) += 1;
    }
    json!(counts)
}
