//! The run report: a summary table for the terminal and a Markdown document for the incident
//! ticket. Built from the run's outcome only (ids, states, reasons): never a secret.

use super::Table;
use crate::engine::run::RunReport;
use crate::engine::target::Outcome;
use crate::escape::{markdown as md_text, markdown_code};

/// One line per target: id, provider, state, and what to do next.
pub fn summary_table(report: &RunReport) -> String {
    let mut table = Table::new(["TARGET", "PROVIDER", "STATE", "DETAIL"]);
    for t in &report.targets {
        let (state, detail) = state_and_detail(&t.outcome);
        table.row([
            t.id.clone(),
            t.provider.to_string(),
            state.to_string(),
            detail,
        ]);
    }
    table.render()
}

fn state_and_detail(outcome: &Outcome) -> (&'static str, String) {
    match outcome {
        Outcome::Done => ("done", "rotated; old credential revoked".into()),
        Outcome::Waiting {
            until,
            old_still_valid,
        } => (
            "waiting",
            format!(
                "grace period until {}{}; `rekey apply --resume` after that revokes the old credential",
                until.to_rfc3339(),
                if *old_still_valid {
                    " with the old credential still valid (the owner cannot disable it)"
                } else {
                    ""
                }
            ),
        ),
        Outcome::AwaitingConfirmation { action } => {
            ("awaiting confirmation", format!("manual step: {action}"))
        }
        Outcome::Skipped { reason } => ("skipped", reason.clone()),
        Outcome::Incomplete { reason } => ("incomplete", reason.clone()),
        Outcome::Stale { reason } => ("stale", reason.clone()),
        Outcome::Failed { reason } => ("failed", reason.clone()),
    }
}

/// A Markdown report for the incident ticket.
pub fn markdown(report: &RunReport) -> String {
    let mut out = String::new();
    out.push_str(&format!("# rekey run {}\n\n", report.run));
    out.push_str(&format!("- Plan: {}\n", markdown_code(&report.plan)));
    out.push_str(&format!(
        "- Run status: **{}**\n",
        format!("{:?}", report.status).to_lowercase()
    ));
    out.push_str(&format!(
        "- Written: {}\n\n",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    ));
    let count = |f: fn(&Outcome) -> bool| report.targets.iter().filter(|t| f(&t.outcome)).count();
    out.push_str(&format!(
        "{} targets: {} done, {} waiting, {} awaiting confirmation, {} skipped, {} incomplete, {} failed, {} stale.\n\n",
        report.targets.len(),
        count(|o| matches!(o, Outcome::Done)),
        count(|o| matches!(o, Outcome::Waiting { .. })),
        count(|o| matches!(o, Outcome::AwaitingConfirmation { .. })),
        count(|o| matches!(o, Outcome::Skipped { .. })),
        count(|o| matches!(o, Outcome::Incomplete { .. })),
        count(|o| matches!(o, Outcome::Failed { .. })),
        count(|o| matches!(o, Outcome::Stale { .. })),
    ));
    // "Due because": the incident or the schedule that made the target due (a skipped
    // target says in its detail why it was not).
    out.push_str("| Target | Provider | State | Due because | Detail |\n|---|---|---|---|---|\n");
    for t in &report.targets {
        let (state, detail) = state_and_detail(&t.outcome);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            markdown_code(&t.id),
            t.provider,
            state,
            md_text(t.due.as_deref().unwrap_or("")),
            md_text(&detail)
        ));
    }
    let pending: Vec<_> = report
        .targets
        .iter()
        .filter(|t| {
            matches!(
                t.outcome,
                Outcome::Waiting { .. } | Outcome::Incomplete { .. }
            )
        })
        .collect();
    let manual: Vec<_> = report
        .targets
        .iter()
        .filter_map(|t| match &t.outcome {
            Outcome::AwaitingConfirmation { action } => Some((t.id.as_str(), action.as_str())),
            _ => None,
        })
        .collect();
    if !manual.is_empty() {
        out.push_str("\n## Manual steps\n\n");
        for (id, action) in manual {
            out.push_str(&format!(
                "- [ ] {}: {}\n",
                markdown_code(id),
                md_text(action)
            ));
        }
    }
    if !report.hunts.is_empty() {
        out.push_str("\n## Hunts\n\n");
        for h in &report.hunts {
            out.push_str(&format!(
                "### {}, {}-rotation\n\n{} (findings in {})\n\n",
                markdown_code(&h.target),
                h.phase,
                md_text(&h.summary),
                markdown_code(&h.file)
            ));
            if !h.per_rule.is_empty() {
                out.push_str("| Rule | Severity | Count |\n|---|---|---|\n");
                for (rule, severity, n) in &h.per_rule {
                    out.push_str(&format!("| {} | {severity} | {n} |\n", md_text(rule)));
                }
                out.push('\n');
            }
        }
    }
    if !pending.is_empty() {
        out.push_str(&format!(
            "\n## Pending\n\nContinue with `rekey apply --resume {}` ({} target(s) pending).\n",
            report.run,
            pending.len()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::journal::RunStatus;
    use crate::engine::run::TargetReport;
    use crate::plan::ProviderKind;

    /// A failure reason quotes a service's message: it must not reshape the report.
    #[test]
    fn hostile_reasons_stay_inside_their_cell() {
        let report = RunReport {
            run: "r1".into(),
            plan: "plan`.yaml".into(),
            status: RunStatus::Incomplete,
            targets: vec![TargetReport {
                id: "t`x|y".into(),
                provider: ProviderKind::Exec,
                due: Some("due | because".into()),
                outcome: Outcome::Failed {
                    reason: "boom | injected | cells\n# Heading\n[click](https://evil.example) <img src=x>"
                        .into(),
                },
            }],
            serious_findings: 0,
            hunts: Vec::new(),
        };
        let md = markdown(&report);
        let row = md
            .lines()
            .find(|l| l.contains("boom"))
            .unwrap_or_else(|| panic!("{md}"));
        // One row, five cells: every other `|` is escaped (`\|`, never ` | `).
        assert_eq!(row.matches(" | ").count(), 4, "{row}");
        assert!(!md.contains("\n# Heading"), "{md}");
        assert!(
            row.contains("\\[click\\]") && row.contains("\\<img"),
            "{row}"
        );
        assert!(md.contains("- Plan: `` plan`.yaml ``"), "{md}");
    }
}
