//! The load engine (`stampede run`). Being written.

pub mod plan;
pub mod scenario;
pub mod thresholds;

use clap::Args;

use crate::shutdown::Stop;

/// Flags of `stampede run`.
#[derive(Debug, Args)]
pub struct RunArgs {}

/// Flags of `stampede scenarios`.
#[derive(Debug, Args)]
pub struct ScenariosArgs {}

pub async fn main(_args: RunArgs, _stop: Stop) -> anyhow::Result<i32> {
    anyhow::bail!("the load engine is not built yet")
}

pub fn list_scenarios(_args: ScenariosArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the load engine is not built yet")
}
