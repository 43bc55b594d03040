//! The conformance suite (`stampede conform`). Placeholder: being written.

use clap::Args;

use crate::shutdown::Stop;

/// Flags of `stampede conform`.
#[derive(Debug, Args)]
pub struct ConformArgs {}

pub async fn main(_args: ConformArgs, _stop: Stop) -> anyhow::Result<i32> {
    anyhow::bail!("the conformance suite is not built yet")
}
