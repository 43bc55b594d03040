//! Run reports. Placeholder: being written.

pub mod hlog;
pub mod html;
pub mod plot;
