//! Inventory: where secrets live in CircleCI. This module owns the normalized inventory
//! ([`model`]), reading and writing it as JSON, the live reader ([`live`]) and the import of
//! CircleCI-Env-Inspector's output ([`env_inspector`]).

pub mod env_inspector;
pub mod live;
pub mod model;

pub use model::*;
