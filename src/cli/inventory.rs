//! `rekey inventory`: its arguments, taking the inventory (live from the CircleCI API or
//! imported from Env-Inspector output) and the summary printed beside it.

use super::output::{Failure, Output, print_json, runtime, write_output};
use crate::credentials::{self, Service};
use crate::inventory::{self, Inventory};
use crate::report::Table;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct InventoryArgs {
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

pub fn run(args: InventoryArgs, output: Output) -> Result<u8, Failure> {
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
    let summary = summary(&inv);
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

pub fn summary(inv: &Inventory) -> String {
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
    let client = crate::circleci::CircleCiClient::from_env(token)
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
