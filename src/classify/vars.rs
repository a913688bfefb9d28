//! Variables to credentials: matching names against the rules, assembling sibling variables of
//! one place into credentials, and grouping one credential's places into one target.
//!
//! Three passes, each linear in the inventory:
//! 1. every *distinct* name is matched once (one `RegexSet` pass, then captures of the hits) and
//!    the result memoized — names repeat across thousands of projects;
//! 2. per place, rules are applied in precedence order: a credential rule claims a set of sibling
//!    variables (same captured parts) once all its required fields are there, an ignore rule
//!    claims single variables, and whatever is left becomes an unclassified finding;
//! 3. credentials are grouped across places: project variables by rule, names and masks (a match
//!    on every mask is strong evidence of one value), context variables by rule and names only
//!    (no value to compare, so a reviewer confirms).

use super::rules::{CredentialRule, Rule, RuleSet, fill, kebab};
use super::{Draft, Output, place_token};
use crate::inventory::{Context, Inventory, Masked, Project};
use crate::plan::compact::FieldMap;
use crate::plan::{
    Binding, Confidence, Encoding, ExecCommands, Finding, Located, Observed, ProviderKind,
    REVIEW_REQUIRED, Target, Text,
};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash (rustc's hasher): the keys here are variable names and small integer tuples from the
/// inventory, hashed hundreds of thousands of times; SipHash's DoS resistance buys nothing.
#[derive(Default)]
pub(super) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

pub(super) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// One rule field (or ignore rule) that a name matched, with the parts it captured.
#[derive(Debug, Clone, Copy)]
struct Hit {
    rule: u32,
    field: u16,
    /// Interned capture values (0 for ignore rules).
    stem: u32,
}

#[derive(Debug, Default)]
struct NameInfo {
    hits: Vec<Hit>,
    /// First hint whose regex matches, for an unclassified variable's reason.
    hint: Option<u32>,
}

/// Memoized name matching, shared by every place of one classification.
struct Matcher<'r, 'i> {
    rules: &'r RuleSet,
    ids: FxMap<&'i str, u32>,
    names: Vec<NameInfo>,
    stem_ids: HashMap<String, u32>,
    /// Capture values of each stem, in the rule's capture order.
    stems: Vec<Vec<String>>,
}

impl<'r, 'i> Matcher<'r, 'i> {
    fn new(rules: &'r RuleSet) -> Self {
        Matcher {
            rules,
            ids: FxMap::default(),
            names: Vec::new(),
            stem_ids: HashMap::new(),
            stems: vec![Vec::new()],
        }
    }

    fn name_id(&mut self, name: &'i str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let info = self.match_name(name);
        let id = self.names.len() as u32;
        self.names.push(info);
        self.ids.insert(name, id);
        id
    }

    fn match_name(&mut self, name: &str) -> NameInfo {
        let mut hits = Vec::new();
        let rules = self.rules;
        let (stem_ids, stems) = (&mut self.stem_ids, &mut self.stems);
        rules.for_each_match(name, |r, f| match rules.rules.get(r) {
            Some(Rule::Credential(rule)) => {
                let Some(caps) = rule
                    .fields
                    .get(f)
                    .and_then(|field| field.var.captures(name))
                else {
                    return;
                };
                let values: Vec<String> = rule
                    .captures
                    .iter()
                    .map(|c| caps.name(c).map_or("", |m| m.as_str()).to_string())
                    .collect();
                let key = values.join("\u{1f}");
                let next = stems.len() as u32;
                let stem = *stem_ids.entry(key).or_insert_with(|| {
                    stems.push(values);
                    next
                });
                hits.push(Hit {
                    rule: r as u32,
                    field: f as u16,
                    stem,
                });
            }
            Some(Rule::Ignore(_)) => hits.push(Hit {
                rule: r as u32,
                field: 0,
                stem: 0,
            }),
            None => {}
        });
        let hint = rules
            .hints
            .iter()
            .position(|h| h.var.is_match(name))
            .map(|i| i as u32);
        NameInfo { hits, hint }
    }
}

/// A project or a context, seen as a list of variables.
#[derive(Clone, Copy)]
enum PlaceRef<'i> {
    Project(&'i Project),
    Context(&'i Context),
}

impl<'i> PlaceRef<'i> {
    fn len(self) -> usize {
        match self {
            PlaceRef::Project(p) => p.env_vars.len(),
            PlaceRef::Context(c) => c.variables.len(),
        }
    }
    fn var(self, i: usize) -> &'i str {
        match self {
            PlaceRef::Project(p) => p.env_vars.get(i).map_or("", |v| v.name.as_str()),
            PlaceRef::Context(c) => c.variables.get(i).map_or("", |v| v.name.as_str()),
        }
    }
    fn mask(self, i: usize) -> Option<&'i Masked> {
        match self {
            PlaceRef::Project(p) => p.env_vars.get(i).map(|v| &v.masked),
            PlaceRef::Context(_) => None,
        }
    }
    fn name(self) -> &'i str {
        match self {
            PlaceRef::Project(p) => &p.slug,
            PlaceRef::Context(c) => &c.name,
        }
    }
    fn finding(self, var: &str, reason: Text) -> Finding {
        let (project, context) = match self {
            PlaceRef::Project(p) => (Some(Located::new(Text::new(&p.slug))), None),
            PlaceRef::Context(c) => (None, Some(Located::new(Text::new(&c.name)))),
        };
        Finding {
            project,
            context,
            var: Text::new(var),
            reason,
        }
    }
}

/// Why a variable that a credential rule matched was not claimed by it.
#[derive(Debug, Clone, Copy)]
enum Partial {
    /// The required fields in `missing` (bit per field) had no sibling variable.
    Missing { rule: u32, stem: u32, missing: u64 },
    /// Another variable (`other`, index in the place) already held that field.
    Taken { rule: u32, field: u16, other: u32 },
}

/// Sibling variables of one place that together hold one credential.
struct Instance {
    rule: u32,
    stem: u32,
    place: u32,
    /// Per rule field: (variable index in the place, name id).
    slots: Vec<Option<(u32, u32)>>,
}

/// Classifies every variable of the inventory into `out`.
pub(crate) fn classify_vars(inv: &Inventory, rules: &RuleSet, out: &mut Output) {
    let mut matcher = Matcher::new(rules);

    // Places in plan order (projects, then contexts, by name), so findings come out sorted.
    let mut places: Vec<PlaceRef> = inv.projects.iter().map(PlaceRef::Project).collect();
    places.sort_by(|a, b| a.name().cmp(b.name()));
    let mut contexts: Vec<PlaceRef> = inv.contexts.iter().map(PlaceRef::Context).collect();
    contexts.sort_by(|a, b| a.name().cmp(b.name()));
    places.extend(contexts);

    let mut instances: Vec<Instance> = Vec::new();
    let hint_reasons: Vec<Text> = rules
        .hints
        .iter()
        .map(|h| {
            format!(
                "name suggests a secret ({}) but no rule knows its owner",
                h.label
            )
        })
        .map(Text::from)
        .collect();
    // Buffers reused across places.
    let mut order: Vec<u32> = Vec::new();
    let mut name_ids: Vec<u32> = Vec::new();
    let mut cands: Vec<(u32, u32, u16, u32)> = Vec::new();
    let mut fate: Vec<Fate> = Vec::new();

    for (pi, &place) in places.iter().enumerate() {
        let n = place.len();
        order.clear();
        order.extend(0..n as u32);
        order.sort_by(|&a, &b| place.var(a as usize).cmp(place.var(b as usize)));
        name_ids.clear();
        name_ids.extend((0..n).map(|i| matcher.name_id(place.var(i))));
        fate.clear();
        fate.resize(n, Fate::Free(None));

        // (rule, stem, field, position in name order): sorted, rules come in precedence order
        // and a field's candidates in name order (a deterministic choice between duplicates).
        cands.clear();
        for (pos, &vi) in order.iter().enumerate() {
            let vi = vi as usize;
            for hit in &matcher.names[name_ids[vi] as usize].hits {
                if let Some(Rule::Credential(rule)) = rules.rules.get(hit.rule as usize)
                    && let Some(cond) = rule
                        .fields
                        .get(hit.field as usize)
                        .and_then(|f| f.last_four.as_ref())
                {
                    // A shape condition needs a value: context variables never satisfy it.
                    match place.mask(vi) {
                        Some(m) if cond.is_match(m.last_four()) => {}
                        _ => continue,
                    }
                }
                cands.push((hit.rule, hit.stem, hit.field, pos as u32));
            }
        }
        cands.sort_unstable();

        let mut i = 0;
        while i < cands.len() {
            let (rule_i, stem, _, _) = cands[i];
            let mut j = i;
            while j < cands.len() && cands[j].0 == rule_i && cands[j].1 == stem {
                j += 1;
            }
            let chunk = &cands[i..j];
            i = j;
            match rules.rules.get(rule_i as usize) {
                Some(Rule::Ignore(_)) => {
                    for &(_, _, _, pos) in chunk {
                        let vi = order[pos as usize] as usize;
                        if fate[vi].is_free() {
                            fate[vi] = Fate::Ignored(rule_i);
                        }
                    }
                }
                Some(Rule::Credential(rule)) => {
                    let mut slots: Vec<Option<(u32, u32)>> = vec![None; rule.fields.len()];
                    let mut taken: Vec<(u32, Partial)> = Vec::new();
                    for &(_, _, field, pos) in chunk {
                        let vi = order[pos as usize];
                        if !fate[vi as usize].is_free() || slots.iter().flatten().any(|s| s.0 == vi)
                        {
                            continue;
                        }
                        match slots.get_mut(field as usize) {
                            Some(slot @ None) => *slot = Some((vi, name_ids[vi as usize])),
                            Some(Some((other, _))) => taken.push((
                                vi,
                                Partial::Taken {
                                    rule: rule_i,
                                    field,
                                    other: *other,
                                },
                            )),
                            None => {}
                        }
                    }
                    let mut missing = 0u64;
                    for (f, field) in rule.fields.iter().enumerate() {
                        if field.required && slots.get(f).is_some_and(Option::is_none) {
                            missing |= 1 << f;
                        }
                    }
                    if missing == 0 {
                        for &(vi, _) in slots.iter().flatten() {
                            fate[vi as usize] = Fate::Claimed;
                        }
                        instances.push(Instance {
                            rule: rule_i,
                            stem,
                            place: pi as u32,
                            slots,
                        });
                        for (vi, why) in taken {
                            fate[vi as usize].note(why);
                        }
                    } else {
                        let why = Partial::Missing {
                            rule: rule_i,
                            stem,
                            missing,
                        };
                        for vi in slots
                            .iter()
                            .flatten()
                            .map(|s| s.0)
                            .chain(taken.iter().map(|t| t.0))
                        {
                            fate[vi as usize].note(why);
                        }
                    }
                }
                None => {}
            }
        }

        // Everything not claimed by a credential is listed, in name order.
        for &vi in &order {
            let vi = vi as usize;
            let var = place.var(vi);
            match fate[vi] {
                Fate::Claimed => {}
                Fate::Ignored(r) => {
                    let reason = match rules.rules.get(r as usize) {
                        Some(Rule::Ignore(rule)) => rule.reason.clone(),
                        _ => Text::default(),
                    };
                    out.ignored.push(place.finding(var, reason));
                }
                Fate::Free(partial) => {
                    let reason = match partial {
                        Some(p) => {
                            partial_reason(rules, &matcher.stems, p, var, |v| place.var(v as usize))
                                .into()
                        }
                        None => match matcher.names[name_ids[vi] as usize]
                            .hint
                            .map(|h| h as usize)
                        {
                            Some(h) => hint_reasons.get(h).cloned().unwrap_or_default(),
                            None => Text::new_static("no rule matched"),
                        },
                    };
                    out.unclassified.push(place.finding(var, reason));
                }
            }
        }
    }

    group(rules, &matcher, &places, instances, out);
}

#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Not claimed (yet); the first reason a credential rule could not take it.
    Free(Option<Partial>),
    Claimed,
    Ignored(u32),
}

impl Fate {
    fn is_free(&self) -> bool {
        matches!(self, Fate::Free(_))
    }
    fn note(&mut self, why: Partial) {
        if let Fate::Free(p @ None) = self {
            *p = Some(why);
        }
    }
}

fn partial_reason<'a>(
    rules: &RuleSet,
    stems: &[Vec<String>],
    partial: Partial,
    var: &str,
    var_at: impl Fn(u32) -> &'a str,
) -> String {
    match partial {
        Partial::Missing {
            rule,
            stem,
            missing,
        } => {
            let Some(Rule::Credential(rule)) = rules.rules.get(rule as usize) else {
                return "no rule matched".into();
            };
            let values: Vec<&str> = stems
                .get(stem as usize)
                .map(|s| s.iter().map(String::as_str).collect())
                .unwrap_or_default();
            let wanted: Vec<String> = rule
                .fields
                .iter()
                .enumerate()
                .filter(|(f, _)| missing & (1 << f) != 0)
                .map(|(_, field)| match &field.canonical {
                    Some(c) => fill(c, &rule.captures, &values),
                    None => format!("{} ({})", field.field, rule.description),
                })
                .collect();
            format!("{var} without its {}", wanted.join(" and "))
        }
        Partial::Taken { rule, field, other } => {
            let Some(Rule::Credential(rule)) = rules.rules.get(rule as usize) else {
                return "no rule matched".into();
            };
            let field = rule
                .fields
                .get(field as usize)
                .map_or("", |f| f.field.as_str());
            format!(
                "a second {} ({field}) in this place: {} is already used for it",
                rule.description,
                var_at(other)
            )
        }
    }
}

/// Rule, then per field the variable's name id and masked last four.
type ValueKey<'i> = (u32, Vec<(u32, &'i str)>);

/// Groups instances across places and turns each group into a draft target.
fn group(
    rules: &RuleSet,
    matcher: &Matcher,
    places: &[PlaceRef],
    instances: Vec<Instance>,
    out: &mut Output,
) {
    // Same rule, same names per field, same mask per field: one value in several projects.
    let mut by_value: FxMap<ValueKey, Vec<u32>> = FxMap::default();
    // Same rule and names in several contexts: maybe one value; a reviewer confirms.
    let mut by_names: FxMap<(u32, Vec<u32>), Vec<u32>> = FxMap::default();
    for (k, inst) in instances.iter().enumerate() {
        let Some(&place) = places.get(inst.place as usize) else {
            continue;
        };
        match place {
            PlaceRef::Project(_) => {
                let key = inst
                    .slots
                    .iter()
                    .map(|s| match s {
                        Some((vi, name)) => (
                            *name,
                            place.mask(*vi as usize).map_or("", |m| m.last_four()),
                        ),
                        None => (u32::MAX, ""),
                    })
                    .collect();
                by_value.entry((inst.rule, key)).or_default().push(k as u32);
            }
            PlaceRef::Context(_) => {
                let key = inst
                    .slots
                    .iter()
                    .map(|s| s.map_or(u32::MAX, |(_, name)| name))
                    .collect();
                by_names.entry((inst.rule, key)).or_default().push(k as u32);
            }
        }
    }
    // One draft per group, reserved at once: grown by doubling, the drafts (600 bytes each)
    // were copied about twice over and the old and new arrays held together at 190,000.
    out.drafts.reserve_exact(by_value.len() + by_names.len());
    let groups: Vec<Vec<u32>> = by_value
        .into_values()
        .chain(by_names.into_values())
        .collect();
    let make = |members: &Vec<u32>| -> Option<Draft> {
        let members: Vec<&Instance> = members
            .iter()
            .filter_map(|&k| instances.get(k as usize))
            .collect();
        let first = members.first()?;
        let Some(Rule::Credential(rule)) = rules.rules.get(first.rule as usize) else {
            return None;
        };
        let stem = matcher
            .stems
            .get(first.stem as usize)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Some(draft(rule, stem, places, &members))
    };
    // Drafting was a third of `rekey plan` on 190,000 targets, on one core. Two chunks at a
    // time, the second on another thread, appended in the groups' order: the plan is the same
    // on any machine, and the extra memory is one chunk of drafts (600 bytes each), not half.
    std::thread::scope(|scope| {
        let mut chunks = groups.chunks(DRAFT_CHUNK);
        while let Some(first) = chunks.next() {
            let second = chunks
                .next()
                .map(|c| scope.spawn(move || c.iter().filter_map(make).collect::<Vec<_>>()));
            out.drafts.extend(first.iter().filter_map(make));
            if let Some(second) = second {
                match second.join() {
                    Ok(drafts) => out.drafts.extend(drafts),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    });
}

/// Groups drafted at once by each of two threads ([`group`]). Two in unit tests, so that
/// every classification test there runs through many chunks and checks their order.
const DRAFT_CHUNK: usize = if cfg!(test) { 2 } else { 4096 };

fn draft(
    rule: &CredentialRule,
    stem: &[String],
    places: &[PlaceRef],
    members: &[&Instance],
) -> Draft {
    let mut bindings = Vec::with_capacity(members.len());
    let mut observed = Vec::with_capacity(members.len() * rule.fields.len());
    let mut in_contexts = false;
    for inst in members {
        let Some(&place) = places.get(inst.place as usize) else {
            continue;
        };
        let mut vars = FieldMap::with_capacity(inst.slots.iter().flatten().count());
        let mut encoding = FieldMap::new();
        for (field, slot) in rule.fields.iter().zip(&inst.slots) {
            let Some((vi, _)) = slot else { continue };
            let var = place.var(*vi as usize);
            vars.insert(
                Located::new(Text::new(&field.field)),
                Located::new(Text::new(var)),
            );
            if field.encoding != Encoding::Raw {
                encoding.insert(
                    Located::new(Text::new(&field.field)),
                    Located::new(field.encoding),
                );
            }
            observed.push(match place {
                PlaceRef::Project(p) => Observed {
                    project: Some(Located::new(Text::new(&p.slug))),
                    context: None,
                    var: Some(Text::new(var)),
                    masked: place.mask(*vi as usize).cloned(),
                    updated_at: None,
                    fingerprint: None,
                },
                PlaceRef::Context(c) => Observed {
                    project: None,
                    context: Some(Located::new(Text::new(&c.name))),
                    var: Some(Text::new(var)),
                    masked: None,
                    updated_at: c.variables.get(*vi as usize).and_then(|v| v.updated_at),
                    fingerprint: None,
                },
            });
        }
        bindings.push(match place {
            PlaceRef::Project(p) => Binding {
                project: Some(Located::new(Text::new(&p.slug))),
                context: None,
                context_id: None,
                vars,
                encoding,
                aws_keypair: false,
                ssh_hostname: None,
            },
            PlaceRef::Context(c) => {
                in_contexts = true;
                Binding {
                    project: None,
                    context: Some(Located::new(Text::new(&c.name))),
                    context_id: Some(Text::new(&c.id)),
                    vars,
                    encoding,
                    aws_keypair: false,
                    ssh_hostname: None,
                }
            }
        });
    }
    bindings.sort_by(|a, b| a.place().cmp(&b.place()));
    observed.sort_by(|a, b| (a.place(), &a.var).cmp(&(b.place(), &b.var)));

    // Several contexts with the same names: nothing proves they hold one value.
    let unproven = in_contexts && members.len() > 1;
    let confidence = if unproven {
        rule.confidence.min(Confidence::Medium)
    } else {
        rule.confidence
    };

    // Reason: what it is (its variables), where, and why these places were grouped.
    let first_binding = bindings.first();
    let var_list = rule
        .fields
        .iter()
        .filter_map(|f| {
            first_binding
                .and_then(|b| b.vars.get(&Located::new(Text::new(&f.field))))
                .map(|v| v.as_str())
        })
        .collect::<Vec<_>>();
    let mut reason = format!("{} ({})", rule.description, var_list.join(" + "));
    let first_place = first_binding.and_then(|b| b.place());
    match (members.len(), first_place) {
        (1, Some(p)) => reason.push_str(&format!(" in {p}")),
        (n, _) if in_contexts => {
            let names: Vec<&str> = bindings
                .iter()
                .filter_map(|b| b.context.as_deref().map(Text::as_str))
                .collect();
            let shown = if n > 3 {
                format!("{}, …", names[..3].join(", "))
            } else {
                names.join(", ")
            };
            reason.push_str(&format!(
                ", same names in {n} contexts ({shown}); contexts show no values, so a reviewer must confirm they hold one credential"
            ));
        }
        (n, _) => {
            let last_four = observed
                .iter()
                .find_map(|o| o.masked.as_ref())
                .map_or("", |m| m.last_four());
            reason.push_str(&format!(
                ", same masked last four {last_four} in {n} projects"
            ));
        }
    }
    if let Some(note) = &rule.note {
        reason.push_str("; ");
        reason.push_str(note);
    }
    // Built by appending, it holds up to twice its length; 190,000 of them live until written.
    reason.shrink_to_fit();

    let exec = (rule.provider == ProviderKind::Exec)
        .then(|| rule.exec.clone().unwrap_or_else(review_commands));

    // Id: the rule's words, then the captured parts that say something the words do not.
    let base_words: Vec<&str> = rule.target_id.split('-').collect();
    let mut id_words: Vec<String> = Vec::new();
    for value in stem {
        for w in kebab(value).split('-').filter(|w| !w.is_empty()) {
            if !base_words.contains(&w) {
                id_words.push(w.to_string());
            }
        }
    }
    let distinct = !id_words.is_empty();
    let base = if distinct {
        format!("{}-{}", rule.target_id, id_words.join("-"))
    } else {
        rule.target_id.clone()
    };
    let place_tok = first_place.map(place_token).unwrap_or_default();

    Draft {
        target: Target {
            id: Located::new(String::new()),
            provider: Located::new(rule.provider),
            confidence,
            confirmed: !unproven,
            principal: rule.principal.clone(),
            bindings,
            observed,
            policy: Default::default(),
            exec: exec.map(Box::new),
            ssh_key: None,
        },
        base: base.into(),
        distinct,
        place_token: place_tok,
        rule: Text::new(&rule.name),
        reason,
    }
}

/// Commands an `exec` target starts with: a reviewer writes the real ones.
pub(crate) fn review_commands() -> ExecCommands {
    let placeholder = || Located::new(vec![REVIEW_REQUIRED.to_string()]);
    ExecCommands {
        mint: placeholder(),
        verify: placeholder(),
        revoke: placeholder(),
        inspect: None,
        deactivate: None,
        timeout: None,
    }
}
