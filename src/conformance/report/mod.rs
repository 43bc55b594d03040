//! Renderers of a run's results: the terminal list, JUnit XML, JSON and Markdown. Each is
//! a pure function of [`RunOutcome`](super::verdict::RunOutcome).

pub mod json;
pub mod junit;
pub mod markdown;
pub mod text;
