//! stampede: load and conformance harness for Metered Realtime Messaging v1 servers,
//! plus a reference server of the protocol.
//!
//! Map:
//! - [`proto`]: the protocol model shared by every other part (frames, tokens, patterns, limits).
//! - [`server`]: the reference server (`stampede serve`). Imports only `proto` and `shutdown`.
//! - [`conformance`]: the conformance suite (`stampede conform`).
//! - [`load`], [`metrics`], [`report`]: the load engine (`stampede run`) and its output.
//! - [`transport`]: the one network client (URLs, DNS, TCP, TLS, WebSocket upgrade and
//!   close, HTTP) every connection of the harness goes through.
//! - [`rules`]: the one rule grammar (thresholds, check tolerances, compare's `--fail-on`);
//!   [`junit`]: the one JUnit writer.
//! - [`target`]: how the harness names a server under test; [`embedded`] starts the
//!   reference server in-process and describes it as a `Target`.
//!
//! The server and the harness never import each other: the harness reaches the
//! reference server only through a socket, like any server under test. Only
//! [`embedded`], this file and `tests/` join them.

pub mod capacity;
pub mod cli;
pub mod compare;
pub mod conformance;
pub mod embedded;
pub mod junit;
pub mod load;
pub mod metrics;
pub mod mint;
pub mod proto;
pub mod report;
pub mod rules;
pub mod server;
pub mod shutdown;
pub mod target;
pub mod timer;
pub mod transport;

use cli::{Cli, Command};

/// Runs one command; the result is the process exit code (0 ok, 1 failed checks,
/// 2 could not run). Errors are "could not run" and map to 2 in `main`.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve(args) => server::main(args, shutdown::ctrl_c_twice()).await,
        Command::Mint(args) => mint::main(args),
        Command::Conform(args) => conformance::main(args, shutdown::ctrl_c_twice()).await,
        Command::Run(args) => load::main(args, shutdown::ctrl_c_stages()).await,
        Command::Scenarios(args) => load::list_scenarios(args),
        Command::Report(args) => report::html::main(args),
        Command::Compare(args) => compare::main(args),
        Command::Capacity(args) => capacity::main(args, shutdown::ctrl_c_twice()).await,
    }
}
