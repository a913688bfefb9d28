//! Rotation plans: the reviewed artifact that `apply` executes exactly.
//!
//! - [`model`]: the types (and so the JSON Schema), in [`compact`] containers where it counts;
//! - [`principal`]: a target's principal, stored as the fields it sets;
//! - [`load`]: reading YAML with errors that name file, line and column;
//! - [`fastload`]: the fast reader `load` tries first, for the subset plans are written in;
//! - [`validate`]: the semantic checks serde cannot express;
//! - [`write`]: the planner's YAML, in a stable order, with comments for the reviewer;
//! - [`emit`]: the text of targets and lists, written directly (hostile strings quoted);
//! - [`build`]: from an inventory and its classification to a plan;
//! - [`due`]: whether a credential is due (incident and schedule);
//! - [`split`]: a plan split into a directory of files for review, read back as one;
//! - [`text`]: a plan file's text, mapped when large so it need not stay resident.

pub mod build;
pub mod compact;
pub mod discover;
pub mod due;
pub mod duration;
pub mod emit;
pub mod fastload;
pub mod load;
pub mod located;
pub mod model;
pub mod principal;
pub mod refresh;
pub mod split;
pub mod text;
pub mod validate;
pub mod write;

pub use duration::PlanDuration;
pub use located::{Located, Pos};
pub use model::*;
pub use principal::{Principal, PrincipalField};

/// The plan's JSON Schema, as committed in `plans/rekey-plan.schema.json`.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Plan);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}
