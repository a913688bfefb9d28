//! `rekey validate`: check a plan and print every diagnostic, located.

use super::output::{Failure, Output, print_json};
use crate::diagnostic::{self, Diagnostic};
use crate::plan;
use serde_json::json;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// The plan to check: a file, or the directory of a plan split by `rekey plan --split-by`.
    plan: PathBuf,
    #[command(flatten)]
    endpoint_policy: crate::policy::EndpointPolicy,
}

pub fn run(args: ValidateArgs, output: Output) -> Result<u8, Failure> {
    let name = args.plan.display().to_string();
    // A file, or the directory of a split plan (checked file by file and as a whole).
    let loaded = plan::split::load_path_mapped(&args.plan);
    let (diagnostics, targets) = match &loaded {
        Err(d) => (vec![d.clone()], 0),
        Ok(loaded) => {
            let mut d = loaded.validate();
            // Only a plan that names endpoints has any for the policy to refuse (and a
            // split plan's file text is read again only when there is a line to quote).
            for f in loaded.files.iter().filter(|f| !f.plan.endpoints.is_empty()) {
                d.extend(
                    args.endpoint_policy
                        .plan_diagnostics(&f.name, &f.text, &f.plan),
                );
            }
            (d, loaded.target_count())
        }
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
    // The process ends after this command: freeing 190,000 targets one allocation at a time
    // is work the exit does at once (a plan holds no secret value to zero).
    std::mem::forget(loaded);
    Ok(if valid { 0 } else { 2 })
}
