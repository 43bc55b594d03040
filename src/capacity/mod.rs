//! `stampede capacity`: the most load a server holds within its SLOs.
//!
//! - [`search`]: the search as a pure state machine (grow, then bisect; robust majorities;
//!   generator-bound trials make it inconclusive);
//! - [`model`]: percentile confidence intervals, the throughput knee, the Universal
//!   Scalability Law fit.

pub mod model;
pub mod search;
