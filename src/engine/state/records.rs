//! The journal's rows as S3 objects and back: the one place that knows the key layout under a
//! state prefix (see [`super`]) and each object's JSON.
//!
//! A [`Dump`] is everything a journal holds (runs with their plans, events, target states and
//! stash rows, the stash still sealed); reading a prefix gives one, and `state migrate` writes
//! one. Objects are parsed as hostile input: a malformed one is an error naming its key.

use super::s3::{Cond, Remote, Store, StoreError};
use super::{key_segment, parse_key_segment};
use crate::engine::journal::{Event, Phase, RunId, RunRecord, RunStatus, TargetState};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Every row of a journal.
#[derive(Debug, Default, Clone)]
pub struct Dump {
    pub runs: Vec<RunRecord>,
    /// In record order within each (run, target); `seq` is the position there, from 1.
    pub events: Vec<Event>,
    pub targets: Vec<(RunId, TargetState)>,
    pub stash: Vec<StashRow>,
    /// (run, target) → how many record batches S3 holds for it: the next batch a writer
    /// continuing that target's chain creates is this plus one.
    pub batches: std::collections::HashMap<(String, String), i64>,
}

/// A stash row as stored: sealed, never opened here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StashRow {
    pub run: String,
    pub target: String,
    pub credential_id: String,
    #[serde(with = "b64")]
    pub key_id: Vec<u8>,
    #[serde(with = "b64")]
    pub nonce: Vec<u8>,
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    pub created_at: String,
}

mod b64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct RunObject {
    id: String,
    plan_name: String,
    plan_file: String,
    plan_sha256: String,
    plan_text: String,
    created_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct StatusObject {
    status: RunStatus,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct EventObject {
    run: String,
    target: String,
    seq: i64,
    step: String,
    phase: Phase,
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

/// A batch of one target's records, written as one object (see [`super::s3`]): batch `n` of a
/// target is created once (`If-None-Match: *`), and its records follow those of batch `n - 1`
/// without a gap. It also carries the target's displayed state as of its writing.
#[derive(Serialize, Deserialize)]
struct BatchObject {
    run: String,
    target: String,
    batch: i64,
    records: Vec<BatchRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<TargetObject>,
}

#[derive(Serialize, Deserialize)]
struct BatchRecord {
    seq: i64,
    step: String,
    phase: Phase,
    detail: serde_json::Value,
    at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
struct TargetObject {
    target: String,
    state: String,
    waiting_until: Option<DateTime<Utc>>,
    message: Option<String>,
    updated_at: DateTime<Utc>,
}

pub fn run_key(run: &str) -> String {
    format!("runs/{run}/run.json")
}
pub fn status_key(run: &str) -> String {
    format!("runs/{run}/status.json")
}
/// The key of a target's record batch `batch` (from 1).
pub fn batch_key(run: &str, target: &str, batch: i64) -> String {
    format!("runs/{run}/events/{}/{batch:08}.json", key_segment(target))
}
pub fn stash_key(run: &str, target: &str) -> String {
    format!("runs/{run}/stash/{}.json", key_segment(target))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

pub fn run_body(r: &RunRecord) -> Vec<u8> {
    json(&RunObject {
        id: r.id.to_string(),
        plan_name: r.plan_name.clone(),
        plan_file: r.plan_file.clone(),
        plan_sha256: r.plan_sha256.clone(),
        plan_text: r.plan_text.clone(),
        created_at: r.created_at,
    })
}
pub fn status_body(status: RunStatus, at: DateTime<Utc>) -> Vec<u8> {
    json(&StatusObject {
        status,
        updated_at: at,
    })
}
/// Batch `batch` of one target: its `records` (in order, `seq` their places) and its displayed
/// state when it changed since the last batch.
pub fn batch_body(
    run: &str,
    target: &str,
    batch: i64,
    records: &[Event],
    state: Option<&TargetState>,
) -> Vec<u8> {
    json(&BatchObject {
        run: run.to_string(),
        target: target.to_string(),
        batch,
        records: records
            .iter()
            .map(|e| BatchRecord {
                seq: e.seq,
                step: e.step.clone(),
                phase: e.phase,
                detail: e.detail.clone(),
                at: e.at,
            })
            .collect(),
        state: state.map(|t| TargetObject {
            target: t.target.clone(),
            state: t.state.clone(),
            waiting_until: t.waiting_until,
            message: t.message.clone(),
            updated_at: t.updated_at,
        }),
    })
}
pub fn stash_body(row: &StashRow) -> Vec<u8> {
    json(row)
}

/// Reads every run under the remote's prefix (what a journal opened on S3 starts from).
pub fn fetch(remote: &Remote) -> Result<Dump, String> {
    let (keys, objects) = remote
        .call(|store: Store| async move {
            let keys = store.list("runs/").await?;
            let wanted = keys
                .iter()
                .filter(|k| k.ends_with(".json"))
                .cloned()
                .collect();
            let objects = store.get_many(wanted).await?;
            Ok::<_, StoreError>((keys.len(), objects))
        })?
        .map_err_store(remote)?;
    tracing::debug!(keys, "state read from S3");
    parse(&remote.location().to_string(), objects)
}

trait MapErrStore<T> {
    fn map_err_store(self, remote: &Remote) -> Result<T, String>;
}
impl<T> MapErrStore<T> for Result<T, StoreError> {
    fn map_err_store(self, remote: &Remote) -> Result<T, String> {
        self.map_err(|e| format!("{}: {e}", remote.location()))
    }
}

/// The journal of the objects under a prefix (`location`, for messages); an object that rekey
/// did not write, or a target's batches that do not follow one another, is an error naming it.
fn parse(location: &str, objects: Vec<(String, Vec<u8>)>) -> Result<Dump, String> {
    let bad = |key: &str, e: &dyn std::fmt::Display| {
        format!("{location}{key}: not an object rekey wrote: {e}")
    };
    let mut dump = Dump::default();
    let mut statuses = std::collections::HashMap::new();
    let mut batches: std::collections::HashMap<(String, String), Vec<(&str, BatchObject)>> =
        Default::default();
    let mut singles = std::collections::HashSet::new();
    let mut states: std::collections::HashMap<(String, String), TargetObject> = Default::default();
    for (key, bytes) in &objects {
        let parts: Vec<&str> = key.split('/').collect();
        match parts.as_slice() {
            ["runs", run, "run.json"] => {
                let o: RunObject = serde_json::from_slice(bytes).map_err(|e| bad(key, &e))?;
                if o.id != *run {
                    return Err(bad(key, &"its id is another run's"));
                }
                RunId::parse(&o.id).map_err(|e| bad(key, &e))?;
                dump.runs.push(RunRecord {
                    id: RunId::from(o.id),
                    plan_name: o.plan_name,
                    plan_file: o.plan_file,
                    plan_sha256: o.plan_sha256,
                    plan_text: o.plan_text,
                    status: RunStatus::Running,
                    created_at: o.created_at,
                    updated_at: o.created_at,
                });
            }
            ["runs", run, "status.json"] => {
                let o: StatusObject = serde_json::from_slice(bytes).map_err(|e| bad(key, &e))?;
                statuses.insert(run.to_string(), o);
            }
            ["runs", run, "events", target, _] => {
                let value: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(|e| bad(key, &e))?;
                let (o_run, o_target) = (
                    value
                        .get("run")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default(),
                    value
                        .get("target")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default(),
                );
                if o_run != *run || parse_key_segment(target).as_deref() != Some(o_target) {
                    return Err(bad(key, &"its run or target is not the one of its key"));
                }
                let chain = (o_run.to_string(), o_target.to_string());
                if value.get("records").is_some() {
                    let o: BatchObject = serde_json::from_value(value).map_err(|e| bad(key, &e))?;
                    batches.entry(chain).or_default().push((key.as_str(), o));
                } else {
                    // One record per object: what rekey wrote before records were batched.
                    let o: EventObject = serde_json::from_value(value).map_err(|e| bad(key, &e))?;
                    if batches.contains_key(&chain) {
                        return Err(bad(key, &"a single record beside record batches"));
                    }
                    singles.insert(chain);
                    dump.events.push(Event {
                        seq: o.seq,
                        run: RunId::from(o.run),
                        target: o.target,
                        step: o.step,
                        phase: o.phase,
                        detail: o.detail,
                        at: o.at,
                    });
                }
            }
            ["runs", run, "targets", _] => {
                // A displayed state of its own: written before states travelled in batches.
                let o: TargetObject = serde_json::from_slice(bytes).map_err(|e| bad(key, &e))?;
                states.insert((run.to_string(), o.target.clone()), o);
            }
            ["runs", run, "stash", _] => {
                let o: StashRow = serde_json::from_slice(bytes).map_err(|e| bad(key, &e))?;
                if o.run != *run {
                    return Err(bad(key, &"its run is not the one of its key"));
                }
                dump.stash.push(o);
            }
            _ => tracing::debug!(key, "not a state object; ignored"),
        }
    }
    for (chain, mut list) in batches {
        if singles.contains(&chain) {
            let key = list.first().map(|(k, _)| *k).unwrap_or_default();
            return Err(bad(key, &"a record batch beside single records"));
        }
        list.sort_by_key(|(_, b)| b.batch);
        // Batches are written one after the other, each only once its predecessor is in S3:
        // numbered from 1 without a gap, their records numbered from 1 without a gap. Anything
        // else was made by hand, and resuming from it could repeat a side effect.
        let mut seq = 0;
        for (n, (key, batch)) in list.iter_mut().enumerate() {
            if batch.batch != n as i64 + 1 {
                return Err(bad(
                    key,
                    &format!("batch {} of this target is missing", n + 1),
                ));
            }
            for r in std::mem::take(&mut batch.records) {
                if r.seq != seq + 1 {
                    return Err(bad(key, &format!("record {} follows record {seq}", r.seq)));
                }
                seq = r.seq;
                dump.events.push(Event {
                    seq: r.seq,
                    run: RunId::from(chain.0.clone()),
                    target: chain.1.clone(),
                    step: r.step,
                    phase: r.phase,
                    detail: r.detail,
                    at: r.at,
                });
            }
            if let Some(state) = batch.state.take() {
                if state.target != chain.1 {
                    return Err(bad(key, &"its state is another target's"));
                }
                states.insert(chain.clone(), state);
            }
        }
        dump.batches.insert(chain, list.len() as i64);
    }
    for ((run, _), o) in states {
        dump.targets.push((
            RunId::from(run),
            TargetState {
                target: o.target,
                state: o.state,
                waiting_until: o.waiting_until,
                message: o.message,
                updated_at: o.updated_at,
            },
        ));
    }
    for run in &mut dump.runs {
        if let Some(s) = statuses.remove(run.id.as_str()) {
            run.status = s.status;
            run.updated_at = s.updated_at;
        }
    }
    let known: std::collections::HashSet<String> =
        dump.runs.iter().map(|r| r.id.to_string()).collect();
    let orphan = |run: &str| !known.contains(run);
    if dump.events.iter().any(|e| orphan(e.run.as_str())) {
        tracing::warn!("S3 state holds events of a run without its run.json; they are ignored");
    }
    dump.events.retain(|e| !orphan(e.run.as_str()));
    dump.targets.retain(|(r, _)| !orphan(r.as_str()));
    dump.stash.retain(|s| !orphan(&s.run));
    dump.batches.retain(|(r, _), _| !orphan(r));
    dump.runs.sort_by(|a, b| a.id.cmp(&b.id));
    dump.events
        .sort_by(|a, b| (&a.run, &a.target, a.seq).cmp(&(&b.run, &b.target, b.seq)));
    Ok(dump)
}

/// Writes `dump` under the remote's prefix, each object only where none is (`If-None-Match`):
/// an object already there with other bytes is an error, never overwritten. Returns the number
/// of objects written.
pub fn upload(remote: &Remote, dump: &Dump) -> Result<usize, String> {
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();
    for r in &dump.runs {
        objects.push((run_key(r.id.as_str()), run_body(r)));
        objects.push((
            status_key(r.id.as_str()),
            status_body(r.status, r.updated_at),
        ));
    }
    // Each target's records and state as its batch 1 (on a prefix that has none yet).
    type Chain<'a> = (Vec<Event>, Option<&'a TargetState>);
    let mut chains: std::collections::BTreeMap<(&str, &str), Chain> = Default::default();
    for e in &dump.events {
        let records = &mut chains.entry((e.run.as_str(), &e.target)).or_default().0;
        records.push(Event {
            seq: records.len() as i64 + 1,
            ..e.clone()
        });
    }
    for (run, t) in &dump.targets {
        chains.entry((run.as_str(), &t.target)).or_default().1 = Some(t);
    }
    for ((run, target), (records, state)) in chains {
        objects.push((
            batch_key(run, target, 1),
            batch_body(run, target, 1, &records, state),
        ));
    }
    for s in &dump.stash {
        objects.push((stash_key(&s.run, &s.target), stash_body(s)));
    }
    let location = remote.location().to_string();
    remote.call(|store: Store| async move {
        let mut written = 0;
        let results: Vec<_> = futures::stream::iter(objects.into_iter().map(|(key, body)| {
            let store = store.clone();
            async move {
                let r = store.put(&key, body.clone(), Cond::Absent).await;
                (key, body, r, store)
            }
        }))
        .buffer_unordered(16)
        .collect()
        .await;
        for (key, body, r, store) in results {
            match r {
                Ok(_) => written += 1,
                Err(StoreError::Precondition) => {
                    let same = matches!(store.get(&key).await, Ok(Some((b, _))) if b == body);
                    if !same {
                        return Err(format!(
                            "{location}{key} already exists with other content; \
                                 nothing there was overwritten"
                        ));
                    }
                }
                Err(e) => return Err(format!("{location}{key}: {e}")),
            }
        }
        Ok(written)
    })?
}

use futures::StreamExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "r20261205-010203-abcd";

    fn event(seq: i64, step: &str) -> Event {
        Event {
            seq,
            run: RunId::from(RUN.to_string()),
            target: "t/1".into(),
            step: step.into(),
            phase: Phase::Intent,
            detail: serde_json::json!({}),
            at: Utc::now(),
        }
    }

    fn state(target: &str) -> TargetState {
        TargetState {
            target: target.into(),
            state: "waiting".into(),
            waiting_until: None,
            message: None,
            updated_at: Utc::now(),
        }
    }

    fn run_object() -> (String, Vec<u8>) {
        let now = Utc::now();
        let run = RunRecord {
            id: RunId::from(RUN.to_string()),
            plan_name: "p".into(),
            plan_file: "p.yaml".into(),
            plan_sha256: "0".into(),
            plan_text: String::new(),
            status: RunStatus::Running,
            created_at: now,
            updated_at: now,
        };
        (run_key(RUN), run_body(&run))
    }

    fn batch(n: i64, records: &[Event], state: Option<&TargetState>) -> (String, Vec<u8>) {
        (
            batch_key(RUN, "t/1", n),
            batch_body(RUN, "t/1", n, records, state),
        )
    }

    #[test]
    fn batches_read_back_as_the_records_in_order_with_the_last_state() {
        let objects = vec![
            run_object(),
            batch(2, &[event(3, "write")], None),
            batch(
                1,
                &[event(1, "inspect"), event(2, "mint")],
                Some(&state("t/1")),
            ),
            batch(
                3,
                &[],
                Some(&TargetState {
                    state: "done".into(),
                    ..state("t/1")
                }),
            ),
        ];
        let dump = parse("s3://b/", objects).unwrap_or_else(|e| panic!("{e}"));
        let steps: Vec<(i64, &str)> = dump
            .events
            .iter()
            .map(|e| (e.seq, e.step.as_str()))
            .collect();
        assert_eq!(steps, [(1, "inspect"), (2, "mint"), (3, "write")]);
        assert_eq!(dump.targets.len(), 1);
        assert_eq!(dump.targets[0].1.state, "done");
        assert_eq!(
            dump.batches.get(&(RUN.to_string(), "t/1".to_string())),
            Some(&3)
        );
    }

    #[test]
    fn a_missing_batch_or_record_is_an_error_naming_the_object() {
        let gap = vec![
            run_object(),
            batch(1, &[event(1, "inspect")], None),
            batch(3, &[event(2, "mint")], None),
        ];
        let e = parse("s3://b/", gap).err().unwrap_or_default();
        assert!(
            e.contains("00000003.json") && e.contains("batch 2 of this target is missing"),
            "{e}"
        );
        let skipped = vec![
            run_object(),
            batch(1, &[event(1, "inspect"), event(3, "mint")], None),
        ];
        let e = parse("s3://b/", skipped).err().unwrap_or_default();
        assert!(e.contains("record 3 follows record 1"), "{e}");
        let foreign = vec![
            run_object(),
            batch(1, &[event(1, "inspect")], Some(&state("t/2"))),
        ];
        let e = parse("s3://b/", foreign).err().unwrap_or_default();
        assert!(e.contains("another target"), "{e}");
    }

    #[test]
    fn single_record_objects_of_earlier_versions_are_still_read() {
        let e = event(1, "inspect");
        let single = EventObject {
            run: RUN.into(),
            target: e.target.clone(),
            seq: 1,
            step: e.step.clone(),
            phase: e.phase,
            detail: e.detail.clone(),
            at: e.at,
        };
        let objects = vec![
            run_object(),
            (batch_key(RUN, "t/1", 1), json(&single)),
            (format!("runs/{RUN}/targets/{}.json", key_segment("t/1")), {
                let s = state("t/1");
                json(&TargetObject {
                    target: s.target,
                    state: s.state,
                    waiting_until: None,
                    message: None,
                    updated_at: s.updated_at,
                })
            }),
        ];
        let dump = parse("s3://b/", objects).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(dump.events.len(), 1);
        assert_eq!(dump.targets.len(), 1);
    }
}
