//! `rekey schema` (hidden): the plan's JSON Schema, from which the file in plans/ is generated.

use super::output::Failure;
use crate::plan;

pub fn run() -> Result<u8, Failure> {
    println!("{}", plan::schema_json());
    Ok(0)
}
