//! Starts the reference server in-process on an ephemeral loopback port and describes it
//! as a [`Target`](crate::target::Target). Placeholder: being written.
