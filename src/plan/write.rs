//! Writing a plan as YAML for a reviewer: stable order, and comments that say what each target
//! is and why it was classified so. The output parses back to the same [`Plan`].

use super::model::*;
use serde::Serialize;
use serde_saphyr::FlowSeq;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
#[error("cannot write the plan as YAML: {0}")]
pub struct WriteError(pub(super) String);

/// Renders `plan`; `notes` maps a target id to the sentence that explains its classification.
pub fn to_yaml(plan: &Plan, notes: &super::build::Notes) -> Result<String, WriteError> {
    let mut bytes = Vec::with_capacity(512 + plan.targets.len() * 600);
    write_yaml(&mut bytes, plan, notes)?;
    String::from_utf8(bytes).map_err(|e| WriteError(e.to_string()))
}

/// Writes one commented list of the plan (ignored, unclassified, …), each item through `f`.
type ListWriter<'a> = dyn Fn(&mut String, &mut ItemWriter) -> Result<(), WriteError> + 'a;
/// Writes one item of such a list.
type ItemWriter<'a> = dyn FnMut(&mut String) -> Result<(), WriteError> + 'a;

/// Streams the plan to `w`: a plan of 10,000 projects is tens of megabytes, and holding it
/// whole beside the plan itself would double the planner's peak memory.
pub fn write_yaml<W: std::io::Write + ?Sized>(
    w: &mut W,
    plan: &Plan,
    notes: &super::build::Notes,
) -> Result<(), WriteError> {
    let mut out = String::with_capacity(FLUSH_AT + 4096);
    let mut flush = |out: &mut String, force: bool| -> Result<(), WriteError> {
        if force || out.len() >= FLUSH_AT {
            w.write_all(out.as_bytes())
                .map_err(|e| WriteError(e.to_string()))?;
            out.clear();
        }
        Ok(())
    };
    header(&mut out, plan);
    section(&mut out, "apiVersion", &plan.api_version)?;
    section(&mut out, "kind", &plan.kind)?;
    section(&mut out, "metadata", &plan.metadata)?;
    match &plan.incident {
        Some(incident) => {
            out.push_str("# The window in which exposed credentials may have been used (CircleCI: from 2022-12-21).\n# Every credential created before `until` (before now while `until` is absent) is rotated\n# whatever its age; set `until` when the exposure ended.\n");
            section(&mut out, "incident", incident)?;
        }
        None => out.push_str(
            "# No incident: a scheduled plan, which rotates only credentials older than max_age.\n",
        ),
    }
    out.push_str("# grace: how long an old credential stays disabled before it is deleted.\n");
    out.push_str("# max_age: a credential older than this is due (in an incident or not).\n");
    section(&mut out, "defaults", &plan.defaults)?;
    if plan.hunts.sources.is_empty() {
        out.push_str(
            "# hunts.sources: where the audit logs are (exports, s3://bucket/prefix, or `api`);\n# a hunt without a source for its target is skipped. See `rekey hunt --list`.\n",
        );
    }
    section(&mut out, "hunts", &HuntsView::of(&plan.hunts))?;
    if !plan.allow_cidrs.is_empty() {
        section(&mut out, "allow_cidrs", &FlowSeq(&plan.allow_cidrs))?;
    }
    if !plan.endpoints.is_empty() {
        section(&mut out, "endpoints", &plan.endpoints)?;
    }

    out.push_str("\n# Targets: one credential each, with every CircleCI place that holds it.\n");
    if plan.targets.is_empty() {
        out.push_str("targets: []\n");
    } else {
        out.push_str("targets:\n");
        // Two blocks at a time, the second rendered on a second core, written in order.
        let mut blocks = plan.targets.chunks(TARGETS_PER_BLOCK);
        while let Some(first) = blocks.next() {
            let second = blocks.next();
            let rendered = std::thread::scope(|scope| {
                let helper = second.map(|block| {
                    scope.spawn(move || {
                        let mut text = String::with_capacity(block.len() * 700);
                        render_targets(&mut text, block, notes).map(|()| text)
                    })
                });
                let done = render_targets(&mut out, first, notes);
                let second = helper.map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(WriteError("rendering targets failed".to_string())))
                });
                done.map(|()| second)
            })?;
            flush(&mut out, false)?;
            if let Some(mut text) = rendered.transpose()? {
                flush(&mut out, true)?;
                flush(&mut text, true)?;
            }
        }
    }
    let lists: [(&str, &str, &ListWriter); 3] = [
        (
            "ignored",
            "Recognised as configuration, not secrets: not rotated.",
            &|out, f| list_items(out, &plan.ignored, super::emit::finding, f),
        ),
        (
            "unclassified",
            "No rule recognised these: decide for each, then move it into a target or `ignored`.",
            &|out, f| list_items(out, &plan.unclassified, super::emit::finding, f),
        ),
        (
            "errors",
            "Places the inventory could not read: secrets there are NOT in this plan.",
            &|out, f| list_items(out, &plan.errors, super::emit::inventory_error, f),
        ),
    ];
    let lens = [
        plan.ignored.len(),
        plan.unclassified.len(),
        plan.errors.len(),
    ];
    for ((key, why, items), len) in lists.into_iter().zip(lens) {
        if len == 0 && key == "ignored" {
            continue;
        }
        let _ = writeln!(out, "\n# {why}");
        if len == 0 {
            let _ = writeln!(out, "{key}: []");
            continue;
        }
        let _ = writeln!(out, "{key}:");
        items(&mut out, &mut |out| flush(out, false))?;
    }
    flush(&mut out, true)
}

/// Flush threshold of the streaming writer.
const FLUSH_AT: usize = 256 * 1024;

/// Targets rendered as one block (about 1.4 MB of text); two blocks are rendered at once.
const TARGETS_PER_BLOCK: usize = 2048;

/// Each target with its comment, as the plan shows it.
fn render_targets(
    out: &mut String,
    targets: &[Target],
    notes: &super::build::Notes,
) -> Result<(), WriteError> {
    for target in targets {
        out.push('\n');
        target_comment(out, target, notes.get(target.id.as_str()));
        super::emit::target(out, target, &|policy| {
            let mut one = BTreeMap::new();
            one.insert("policy", policy);
            yaml_of(&one)
        })?;
    }
    Ok(())
}

/// Writes each item as a one-line flow mapping (`- {project: …, var: …}`), one at a time.
fn list_items<T>(
    out: &mut String,
    items: &[T],
    item: fn(&mut String, &T),
    flush: &mut dyn FnMut(&mut String) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    for one in items {
        item(out, one);
        flush(out)?;
    }
    Ok(())
}

fn header(out: &mut String, plan: &Plan) {
    out.push_str("# rekey rotation plan. Review every target, then run `rekey validate` and\n");
    out.push_str("# `rekey apply --dry-run`; `apply` does exactly what this file says.\n");
    if let Some(inv) = &plan.metadata.inventory {
        let org =
            super::emit::comment_text(inv.org.as_deref().unwrap_or("(several organizations)"));
        let _ = writeln!(
            out,
            "# Made from the {} inventory of {org} taken at {}.",
            match inv.source {
                crate::inventory::InventorySource::CircleciApi => "live CircleCI API",
                crate::inventory::InventorySource::EnvInspector => "Env-Inspector",
            },
            inv.taken_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    let review = plan.targets.iter().filter(|t| needs_review(t)).count();
    let unconfirmed = plan.targets.iter().filter(|t| !t.confirmed).count();
    let _ = writeln!(
        out,
        "# {} targets ({review} with {REVIEW_REQUIRED} decisions, {unconfirmed} groupings to confirm), {} unclassified, {} ignored, {} places not read.",
        plan.targets.len(),
        plan.unclassified.len(),
        plan.ignored.len(),
        plan.errors.len()
    );
}

fn needs_review(t: &Target) -> bool {
    t.principal
        .set_fields()
        .any(|(_, v)| v.as_str() == REVIEW_REQUIRED)
        || t.exec
            .as_ref()
            .is_some_and(|e| e.all().any(|(_, c)| c.iter().any(|a| a == REVIEW_REQUIRED)))
        || t.ssh_key.as_ref().is_some_and(|h| {
            [&h.install, &h.remove]
                .into_iter()
                .flatten()
                .any(|c| c.iter().any(|a| a == REVIEW_REQUIRED))
        })
}

fn target_comment(out: &mut String, t: &Target, note: Option<&String>) {
    let places = t.bindings.len();
    let _ = writeln!(
        out,
        "  # {} — {}, {} confidence, {places} place{}",
        super::emit::comment_text(t.id.as_str()),
        t.provider.value,
        t.confidence.as_str(),
        if places == 1 { "" } else { "s" }
    );
    if let Some(note) = note {
        for line in wrap(note, 94) {
            let _ = writeln!(out, "  # {}", super::emit::comment_text(&line));
        }
    }
    if !t.confirmed {
        out.push_str("  # CONFIRM: these places were grouped by name only (context values cannot be read);\n");
        out.push_str("  # check they hold one credential, then set `confirmed: true`.\n");
    }
    if needs_review(t) {
        let _ = writeln!(
            out,
            "  # REVIEW: replace every {REVIEW_REQUIRED} below before applying."
        );
    }
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn section<T: Serialize + ?Sized>(
    out: &mut String,
    key: &str,
    value: &T,
) -> Result<(), WriteError> {
    let mut one = BTreeMap::new();
    one.insert(key, value);
    out.push_str(&yaml_of(&one)?);
    Ok(())
}

fn yaml_of<T: Serialize + ?Sized>(value: &T) -> Result<String, WriteError> {
    let mut text = serde_saphyr::to_string(&value).map_err(|e| WriteError(e.to_string()))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

// Views: the plan's header as a reviewer reads it best, short lists in flow style. The views
// borrow the model and must list its fields in its order; the round-trip test (write, parse,
// compare) fails if they drift. Targets and lists are written by [`super::emit`].

#[derive(Serialize)]
struct HuntsView<'a> {
    pre: FlowSeq<&'a Vec<super::Located<String>>>,
    post: FlowSeq<&'a Vec<super::Located<String>>>,
    #[serde(skip_serializing_if = "super::model::HuntSources::is_empty")]
    sources: &'a super::model::HuntSources,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    delivery_delay: &'a std::collections::BTreeMap<String, super::Located<super::PlanDuration>>,
}

impl<'a> HuntsView<'a> {
    fn of(h: &'a HuntSelection) -> Self {
        HuntsView {
            pre: FlowSeq(&h.pre),
            post: FlowSeq(&h.post),
            sources: &h.sources,
            delivery_delay: &h.delivery_delay,
        }
    }
}
