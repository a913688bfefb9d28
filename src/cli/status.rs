//! `rekey status`: the runs of a state directory and, per target of one run, the step reached
//! and what is pending.

use super::output::{Failure, Output, print_json};
use crate::plan;
use crate::report::Table;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct StatusArgs {
    /// State directory of the runs.
    #[arg(long, default_value = ".rekey", value_name = "DIR")]
    state_dir: PathBuf,
    /// Show this run's targets (default: the newest run).
    run: Option<String>,
}

pub fn run(args: StatusArgs, output: Output) -> Result<u8, Failure> {
    use crate::engine::journal::{Journal, RunId};
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
