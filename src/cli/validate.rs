//! `rekey validate`: check a plan and print every diagnostic, located.

use super::output::{Failure, Output, print_json};
use crate::diagnostic::{self, Diagnostic};
use crate::plan;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The plan to check.
    plan: PathBuf,
}

pub fn run(args: ValidateArgs, output: Output) -> Result<u8, Failure> {
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
