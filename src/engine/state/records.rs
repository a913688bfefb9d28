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
pub fn event_key(run: &str, target: &str, seq: i64) -> String {
    format!("runs/{run}/events/{}/{seq:08}.json", key_segment(target))
}
pub fn target_key(run: &str, target: &str) -> String {
    format!("runs/{run}/targets/{}.json", key_segment(target))
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
pub fn event_body(e: &Event) -> Vec<u8> {
    json(&EventObject {
        run: e.run.to_string(),
        target: e.target.clone(),
        seq: e.seq,
        step: e.step.clone(),
        phase: e.phase,
        detail: e.detail.clone(),
        at: e.at,
    })
}
pub fn target_body(t: &TargetState) -> Vec<u8> {
    json(&TargetObject {
        target: t.target.clone(),
        state: t.state.clone(),
        waiting_until: t.waiting_until,
        message: t.message.clone(),
        updated_at: t.updated_at,
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
    parse(remote, objects)
}

trait MapErrStore<T> {
    fn map_err_store(self, remote: &Remote) -> Result<T, String>;
}
impl<T> MapErrStore<T> for Result<T, StoreError> {
    fn map_err_store(self, remote: &Remote) -> Result<T, String> {
        self.map_err(|e| format!("{}: {e}", remote.location()))
    }
}

fn parse(remote: &Remote, objects: Vec<(String, Vec<u8>)>) -> Result<Dump, String> {
    let bad = |key: &str, e: &dyn std::fmt::Display| {
        format!("{}{key}: not an object rekey wrote: {e}", remote.location())
    };
    let mut dump = Dump::default();
    let mut statuses = std::collections::HashMap::new();
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
                let o: EventObject = serde_json::from_slice(bytes).map_err(|e| bad(key, &e))?;
                if o.run != *run || parse_key_segment(target).as_deref() != Some(&o.target) {
                    return Err(bad(key, &"its run or target is not the one of its key"));
                }
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
            ["runs", run, "targets", _] => {
                let o: TargetObject = serde_json::from_slice(bytes).map_err(|e| bad(key, &e))?;
                dump.targets.push((
                    RunId::from(run.to_string()),
                    TargetState {
                        target: o.target,
                        state: o.state,
                        waiting_until: o.waiting_until,
                        message: o.message,
                        updated_at: o.updated_at,
                    },
                ));
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
    for e in &dump.events {
        objects.push((event_key(e.run.as_str(), &e.target, e.seq), event_body(e)));
    }
    for (run, t) in &dump.targets {
        objects.push((target_key(run.as_str(), &t.target), target_body(t)));
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
