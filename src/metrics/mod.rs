//! Latency histograms and counters of a load run. Placeholder: being written.
