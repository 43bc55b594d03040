//! The suite proves itself: against the clean reference server and every legal variant
//! every must case passes, and every fault switch is caught by at least one must case.

use std::process::Command;

#[test]
fn self_check_kills_every_fault() {
    let o = Command::new(env!("CARGO_BIN_EXE_stampede"))
        .args(["conform", "--self-check"])
        .output()
        .expect("stampede runs");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("faults killed (100%)"), "{out}");
    assert!(!out.contains("SURVIVED"), "{out}");
    assert!(
        out.contains("leave-on-tcp-close                 passed"),
        "{out}"
    );
}
