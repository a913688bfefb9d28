//! `rekey confirm`: record that a manual step of a run is done.

use super::apply::engine_code;
use super::output::{Failure, Output, print_json};
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ConfirmArgs {
    /// The run (see `rekey status`).
    run: String,
    /// The target whose manual step was done.
    target: String,
    /// State directory of the run.
    #[arg(long, default_value = ".rekey", value_name = "DIR")]
    state_dir: PathBuf,
}

pub fn run(args: ConfirmArgs, output: Output) -> Result<u8, Failure> {
    let done =
        crate::engine::run::confirm(&args.state_dir, &args.run, &args.target).map_err(|e| {
            Failure {
                code: match e {
                    crate::engine::EngineError::NothingToConfirm { .. } => 2,
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
