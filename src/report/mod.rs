//! Run reports. Placeholder: being written.
