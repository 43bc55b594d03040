//! The Metered Realtime Messaging v1 protocol model (SPEC §4–§14), shared by the
//! reference server and the harness. Imports nothing from the rest of the crate.
//!
//! - [`frame`]: client requests (parser with the §7.1 check order), server frames,
//!   error and close codes;
//! - [`auth`]: JWT claims, HS256 mint and verify, actions;
//! - [`pattern`]: channel-pattern matching;
//! - [`limits`]: fixed protocol constants and their validators.

pub mod auth;
pub mod frame;
pub mod limits;
pub mod pattern;

pub use auth::{Action, Actions, Claims, TokenError, VerifiedToken};
pub use frame::{ErrorCode, Inbound, PresencePeer, Rejection, Request, ServerFrame, close};
pub use pattern::Pattern;
