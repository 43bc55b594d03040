//! The command line: one subcommand per job. Each subsystem owns its own flags.

use clap::{Parser, Subcommand};

/// Load and conformance harness for Metered Realtime Messaging v1 servers.
#[derive(Debug, Parser)]
#[command(name = "stampede", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the reference server of the protocol.
    Serve(crate::server::ServeArgs),
    /// Mint a token for poking a server by hand.
    Mint(crate::mint::MintArgs),
    /// Run the conformance suite against a server (the embedded one by default).
    Conform(crate::conformance::ConformArgs),
    /// Run a load scenario against a server (the embedded one by default).
    Run(crate::load::RunArgs),
    /// List the built-in scenarios.
    Scenarios(crate::load::ScenariosArgs),
    /// Render DIR/report.html from a run directory.
    Report(crate::report::html::ReportArgs),
    /// Compare two run directories; exit 1 when a --fail-on rule triggers.
    Compare(crate::compare::CompareArgs),
    /// Find the most load a server holds within its SLOs (peers or publish rate).
    Capacity(crate::capacity::CapacityArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
