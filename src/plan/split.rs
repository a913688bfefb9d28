//! A plan split for review: a directory of plan files, one per project, context, provider or
//! owning team, with an index (`index.yaml`), so that review is shared the way CODEOWNERS
//! shares it — and read back as one plan, applied as one run (one journal, one lock).
//!
//! Every file is a whole plan (same header: incident, defaults, hunts, endpoints) holding a
//! part of the targets; a target whose places belong to several groups goes to `shared`.
//! Reading the directory checks each file as `validate` does, then what only the whole can
//! show: a CircleCI variable bound in two files, a target id used twice, headers that differ.

use super::load;
use super::located::Pos;
use super::model::*;
use crate::diagnostic::Diagnostic;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The index file of a split plan.
pub const INDEX: &str = "index.yaml";
/// `kind` of the index.
pub const INDEX_KIND: &str = "RotationPlanIndex";
/// The group of a target whose places belong to several groups (and of inventory errors).
pub const SHARED: &str = "shared";

/// How `rekey plan --split-by` groups targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SplitBy {
    Project,
    Context,
    Provider,
    Team,
}

/// `index.yaml`: the files of a split plan, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub split_by: SplitBy,
    pub files: Vec<IndexEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// File name, relative to the index (no directories).
    pub file: String,
    /// The project, context, provider or team whose targets the file holds.
    pub group: String,
    pub targets: usize,
}

/// Owning team of each project slug or context name (`--teams FILE`, YAML or JSON map).
#[derive(Debug, Clone, Default)]
pub struct Teams(pub HashMap<String, String>);

impl Teams {
    pub fn parse(file: &str, text: &str) -> Result<Teams, Diagnostic> {
        serde_saphyr::from_str::<HashMap<String, String>>(text)
            .map(Teams)
            .map_err(|e| load::yaml_error(file, text, &e))
    }
}

/// One file of a split plan.
#[derive(Debug, Clone)]
pub struct Part {
    pub group: String,
    pub file: String,
    pub plan: Plan,
}

fn group_of_places<'a>(
    places: impl Iterator<Item = Place<'a>>,
    by: SplitBy,
    teams: &Teams,
) -> String {
    let mut groups: Vec<String> = places
        .map(|place| match (by, place) {
            (SplitBy::Project, Place::Project(p)) => p.to_string(),
            (SplitBy::Project, Place::Context(_)) => "contexts".to_string(),
            (SplitBy::Context, Place::Context(c)) => c.to_string(),
            (SplitBy::Context, Place::Project(_)) => "projects".to_string(),
            (_, Place::Project(name) | Place::Context(name)) => teams
                .0
                .get(name)
                .cloned()
                .unwrap_or_else(|| "unowned".to_string()),
        })
        .collect();
    groups.sort_unstable();
    groups.dedup();
    match groups.len() {
        1 => groups.pop().unwrap_or_default(),
        _ => SHARED.to_string(),
    }
}

fn group_of_target(target: &Target, by: SplitBy, teams: &Teams) -> String {
    if by == SplitBy::Provider {
        return target.provider.value.to_string();
    }
    let project = target.principal.project().map(|v| v.as_str());
    let places = target
        .bindings
        .iter()
        .filter_map(|b| b.place())
        // A checkout key is held by its project, not by a variable.
        .chain(project.map(Place::Project));
    group_of_places(places, by, teams)
}

/// A file name for a group: its characters outside `[A-Za-z0-9._-]` as `-`.
fn file_name(group: &str, taken: &mut HashMap<String, usize>) -> String {
    let stem: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let stem = stem.trim_matches('.').to_string();
    let n = taken.entry(stem.clone()).or_insert(0);
    *n += 1;
    match *n {
        1 if stem != "index" => format!("{stem}.yaml"),
        n => format!("{stem}-{n}.yaml"),
    }
}

/// The members of one group, as indices into the plan's lists.
#[derive(Default)]
struct Members {
    targets: Vec<usize>,
    ignored: Vec<usize>,
    unclassified: Vec<usize>,
    errors: bool,
}

/// Every group of `plan` by `by` (teams map places to owners for [`SplitBy::Team`]), in
/// file order, with its file name.
fn groups(plan: &Plan, by: SplitBy, teams: &Teams) -> Vec<(String, String, Members)> {
    let mut groups: BTreeMap<String, Members> = BTreeMap::new();
    let finding_group = |f: &Finding| match by {
        SplitBy::Provider => "unclassified".to_string(),
        _ => group_of_places(f.place().into_iter(), by, teams),
    };
    for (i, target) in plan.targets.iter().enumerate() {
        let group = group_of_target(target, by, teams);
        groups.entry(group).or_default().targets.push(i);
    }
    for (i, f) in plan.ignored.iter().enumerate() {
        groups.entry(finding_group(f)).or_default().ignored.push(i);
    }
    for (i, f) in plan.unclassified.iter().enumerate() {
        groups
            .entry(finding_group(f))
            .or_default()
            .unclassified
            .push(i);
    }
    if !plan.errors.is_empty() {
        groups.entry(SHARED.to_string()).or_default().errors = true;
    }
    let mut taken = HashMap::new();
    groups
        .into_iter()
        .map(|(group, members)| (file_name(&group, &mut taken), group, members))
        .collect()
}

/// `plan` without its targets, findings and errors: what every file of a split plan repeats.
fn header_of(plan: &Plan) -> Plan {
    Plan {
        api_version: plan.api_version.clone(),
        kind: plan.kind.clone(),
        metadata: plan.metadata.clone(),
        incident: plan.incident.clone(),
        defaults: plan.defaults.clone(),
        hunts: plan.hunts.clone(),
        allow_cidrs: plan.allow_cidrs.clone(),
        endpoints: plan.endpoints.clone(),
        targets: Vec::new(),
        ignored: Vec::new(),
        unclassified: Vec::new(),
        errors: Vec::new(),
    }
}

/// The part of `plan` that `members` name (copied).
fn part_of(plan: &Plan, header: &Plan, members: &Members) -> Plan {
    let pick = |list: &[Finding], at: &[usize]| -> Vec<Finding> {
        at.iter().filter_map(|&i| list.get(i).cloned()).collect()
    };
    Plan {
        targets: members
            .targets
            .iter()
            .filter_map(|&i| plan.targets.get(i).cloned())
            .collect(),
        ignored: pick(&plan.ignored, &members.ignored),
        unclassified: pick(&plan.unclassified, &members.unclassified),
        errors: if members.errors {
            plan.errors.clone()
        } else {
            Vec::new()
        },
        ..header.clone()
    }
}

/// Splits `plan` into parts by `by` (teams map places to owners for [`SplitBy::Team`]).
pub fn split(plan: Plan, by: SplitBy, teams: &Teams) -> Vec<Part> {
    let header = header_of(&plan);
    groups(&plan, by, teams)
        .into_iter()
        .map(|(file, group, members)| Part {
            plan: part_of(&plan, &header, &members),
            file,
            group,
        })
        .collect()
}

/// Writes the parts and the index into `dir` (created if missing), each file atomically.
pub fn write_dir(
    dir: &Path,
    by: SplitBy,
    parts: &[Part],
    notes: &super::build::Notes,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for part in parts {
        write_part(dir, &part.file, &part.plan, notes)?;
    }
    let entries = parts.iter().map(|p| IndexEntry {
        file: p.file.clone(),
        group: p.group.clone(),
        targets: p.plan.targets.len(),
    });
    write_index(dir, by, entries.collect())
}

/// [`split`] then [`write_dir`], one part at a time: a part's targets are copied only while its
/// file is written, so the planner never holds a second copy of a 190,000-target plan.
pub fn write_split(
    dir: &Path,
    plan: &Plan,
    by: SplitBy,
    teams: &Teams,
    notes: &super::build::Notes,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let header = header_of(plan);
    let mut entries = Vec::new();
    for (file, group, members) in groups(plan, by, teams) {
        let part = part_of(plan, &header, &members);
        write_part(dir, &file, &part, notes)?;
        entries.push(IndexEntry {
            file,
            group,
            targets: part.targets.len(),
        });
    }
    write_index(dir, by, entries)
}

fn write_part(
    dir: &Path,
    file: &str,
    plan: &Plan,
    notes: &super::build::Notes,
) -> std::io::Result<()> {
    crate::fsio::write_atomically_with(&dir.join(file), |w| {
        super::write::write_yaml(w, plan, notes).map_err(std::io::Error::other)
    })
}

fn write_index(dir: &Path, by: SplitBy, files: Vec<IndexEntry>) -> std::io::Result<()> {
    let index = Index {
        api_version: API_VERSION.to_string(),
        kind: INDEX_KIND.to_string(),
        split_by: by,
        files,
    };
    let yaml = serde_saphyr::to_string(&index).map_err(std::io::Error::other)?;
    let text = format!(
        "# A rotation plan split for review by {}: each file is reviewed by its owners;\n# `rekey validate` and `rekey apply` take this directory and run it as one plan.\n{yaml}",
        serde_json::to_value(by)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    crate::fsio::write_atomically(&dir.join(INDEX), text.as_bytes())
}

/// One file of a split plan as read: its path as shown, its text and its plan.
pub struct LoadedFile {
    pub name: String,
    pub text: super::text::PlanText,
    pub plan: Plan,
}

/// A plan as `validate` and `apply` read it: one file, or a split directory's files.
pub struct Loaded {
    /// The path as the user named it.
    pub name: String,
    pub files: Vec<LoadedFile>,
}

fn read_index(dir: &Path) -> Result<Index, Diagnostic> {
    let path = dir.join(INDEX);
    let name = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Diagnostic::error(
            &name,
            "",
            0,
            0,
            format!("cannot read the index of a split plan: {e}"),
        )
        .with_help(
            "a split plan is a directory written by `rekey plan --split-by`, with an index.yaml",
        )
    })?;
    let index: Index =
        serde_saphyr::from_str(&text).map_err(|e| load::yaml_error(&name, &text, &e))?;
    if index.kind != INDEX_KIND || index.api_version != API_VERSION {
        return Err(Diagnostic::error(
            &name,
            &text,
            1,
            1,
            format!(
                "not a split-plan index: expected `apiVersion: {API_VERSION}` and `kind: {INDEX_KIND}`"
            ),
        ));
    }
    for entry in &index.files {
        if entry.file.contains(['/', '\\']) || entry.file.starts_with('.') {
            let line = text
                .lines()
                .position(|l| l.contains(&entry.file))
                .map(|i| i as u32 + 1)
                .unwrap_or(0);
            return Err(Diagnostic::error(
                &name,
                &text,
                line,
                1,
                format!(
                    "index entry `{}` is not a file name in this directory",
                    entry.file
                ),
            ));
        }
    }
    Ok(index)
}

/// Reads a plan file, or every file of a split plan's directory (in the index's order), into
/// memory. Stops at the first file that does not parse.
pub fn load_path(path: &Path) -> Result<Loaded, Diagnostic> {
    load_path_with(path, load::load_file)
}

/// [`load_path`] for `validate`, which only reports: a large plan file is mapped
/// ([`load::load_file_mapped`]).
pub fn load_path_mapped(path: &Path) -> Result<Loaded, Diagnostic> {
    load_path_with(path, load::load_file_mapped)
}

fn load_path_with(
    path: &Path,
    load_file: fn(&Path) -> Result<(super::text::PlanText, Plan), Diagnostic>,
) -> Result<Loaded, Diagnostic> {
    let name = path.display().to_string();
    if !path.is_dir() {
        let (text, plan) = load_file(path)?;
        return Ok(Loaded {
            files: vec![LoadedFile {
                name: name.clone(),
                text,
                plan,
            }],
            name,
        });
    }
    let index = read_index(path)?;
    let mut files = Vec::with_capacity(index.files.len());
    for entry in &index.files {
        let file: PathBuf = path.join(&entry.file);
        let (mut text, plan) = load_file(&file)?;
        // Parsed: the text is needed again only to quote a line in a diagnostic.
        text.reread_later(&file);
        files.push(LoadedFile {
            name: file.display().to_string(),
            text,
            plan,
        });
    }
    Ok(Loaded { name, files })
}

impl Loaded {
    pub fn target_count(&self) -> usize {
        self.files.iter().map(|f| f.plan.targets.len()).sum()
    }

    /// Every file's own diagnostics, then what only the whole shows: a variable bound in two
    /// files, a target id in two files, a header that differs from the first file's.
    pub fn validate(&self) -> Vec<Diagnostic> {
        let mut out = Vec::new();
        for f in &self.files {
            // The text is read (again) only when there is a line to quote.
            let mut found = super::validate::unquoted(&f.name, &f.plan);
            if !found.is_empty() {
                super::validate::quote_lines(&mut found, &f.text);
            }
            out.extend(found);
        }
        if self.files.len() < 2 {
            return out;
        }
        let first = &self.files[0];
        let mut ids: HashMap<&str, (&str, Pos)> = HashMap::new();
        let mut bound: HashMap<(Place<'_>, &str), (&str, &str, Pos)> = HashMap::new();
        for f in &self.files {
            let error = |pos: Pos, message: String| {
                Diagnostic::error(&f.name, &f.text, pos.line, pos.column, message)
            };
            if f.name != first.name {
                let differs = [
                    ("incident", f.plan.incident != first.plan.incident),
                    ("defaults", f.plan.defaults != first.plan.defaults),
                    ("hunts", f.plan.hunts != first.plan.hunts),
                    ("allow_cidrs", f.plan.allow_cidrs != first.plan.allow_cidrs),
                    ("endpoints", f.plan.endpoints != first.plan.endpoints),
                ];
                for (field, _) in differs.iter().filter(|(_, d)| *d) {
                    out.push(
                        error(
                            f.plan.kind.pos,
                            format!("`{field}` differs from {}'s: the files of a split plan run as one plan", first.name),
                        )
                        .with_help(format!("make `{field}` the same in every file of the directory")),
                    );
                }
            }
            for target in &f.plan.targets {
                let id = target.id.as_str();
                match ids.get(id) {
                    Some((other, at)) if *other != f.name => out.push(
                        error(
                            target.id.pos,
                            format!(
                                "target id `{id}` is also used in {other} (line {})",
                                at.line
                            ),
                        )
                        .with_help("a target id names one target in the whole split plan"),
                    ),
                    Some(_) => {}
                    None => {
                        ids.insert(id, (&f.name, target.id.pos));
                    }
                }
                for binding in &target.bindings {
                    let Some(place) = binding.place() else {
                        continue;
                    };
                    for var in binding.vars.values() {
                        let key = (place, var.as_str());
                        match bound.get(&key) {
                            Some((other_file, other_id, at)) if *other_file != f.name => out.push(
                                error(
                                    var.pos,
                                    format!(
                                        "{place} variable {} is bound by target `{other_id}` in {other_file} (line {}) and by target `{id}` here: one variable holds one credential",
                                        var.as_str(),
                                        at.line
                                    ),
                                )
                                .with_help("keep the binding in one file of the split plan"),
                            ),
                            Some(_) => {}
                            None => {
                                bound.insert(key, (&f.name, id, var.pos));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The files as one plan: the first file's header, every file's targets and findings in
    /// the index's order.
    pub fn merge(self) -> Option<Plan> {
        let mut files = self.files.into_iter();
        let mut plan = files.next()?.plan;
        for f in files {
            plan.targets.extend(f.plan.targets);
            plan.ignored.extend(f.plan.ignored);
            plan.unclassified.extend(f.plan.unclassified);
            plan.errors.extend(f.plan.errors);
        }
        Some(plan)
    }
}
