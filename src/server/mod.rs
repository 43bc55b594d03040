//! The reference server (`stampede serve`). Placeholder: being written.

use clap::Args;

use crate::shutdown::Stop;

/// Flags of `stampede serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {}

pub async fn main(_args: ServeArgs, _stop: Stop) -> anyhow::Result<i32> {
    anyhow::bail!("the reference server is not built yet")
}
