//! The suite proves itself: against the clean reference server and every legal variant
//! every must case passes (cases resting on a `[choice]` a variant departs from are
//! skipped for it), and every fault switch is caught by at least one must case.

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
    assert!(out.contains("variant table:"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
    for variant in stampede::embedded::variant_names() {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{variant:<34} passed"))),
            "variant {variant} did not pass:\n{out}"
        );
    }
    // A variant departing from a [choice] runs without the cases resting on it.
    assert!(
        out.contains("resting on FRAME-16 skipped: a [choice] it departs from"),
        "{out}"
    );
}
