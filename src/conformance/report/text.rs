//! The terminal list: one line per case, failures detailed, then the closing line
//! `N passed, M failed, K skipped`.

use std::fmt::Write;

use super::super::verdict::{CaseResult, RunOutcome, Verdict};

/// One case's line (and its failure detail).
pub fn case_line(r: &CaseResult, verbose: bool) -> String {
    let tag = match r.verdict {
        Verdict::Pass => "PASS",
        Verdict::NonStrict => "NON-STRICT",
        Verdict::Fail => "FAIL",
        Verdict::Skip => "SKIP",
    };
    let mut out = format!(
        "{tag:<10} {} [{}]{}",
        r.id,
        r.spec.join(", "),
        if r.level == super::super::case::Level::Must {
            String::new()
        } else {
            format!(" ({})", r.level)
        }
    );
    match r.verdict {
        Verdict::Skip | Verdict::NonStrict => {
            let _ = write!(out, " — {}", r.detail);
        }
        Verdict::Fail => {
            let _ = write!(out, "\n           {}", r.title);
            if let Some(f) = &r.failure {
                let _ = write!(
                    out,
                    "\n           at {}\n           expected: {}\n           got:      {}",
                    f.step, f.expected, f.actual
                );
                for super::super::verdict::Transcript { label: peer, lines } in &f.seen {
                    let _ = write!(out, "\n           {peer}:");
                    for l in lines {
                        let _ = write!(out, "\n           {l}");
                    }
                }
            } else {
                let _ = write!(out, "\n           {}", r.detail);
            }
        }
        Verdict::Pass => {
            if verbose {
                let _ = write!(out, " ({} ms)", r.duration.as_millis());
            }
        }
    }
    out
}

pub fn render(run: &RunOutcome, verbose: bool) -> String {
    let mut out = String::new();
    for r in &run.results {
        out.push_str(&case_line(r, verbose));
        out.push('\n');
    }
    let s = run.summary();
    let _ = writeln!(
        out,
        "\nconformance of {} in {:.1} s{}{}",
        run.target,
        run.duration.as_secs_f64(),
        if s.non_strict > 0 {
            format!("; {} of the passes are non-strict", s.non_strict)
        } else {
            String::new()
        },
        if run.pacing.is_zero() {
            String::new()
        } else {
            format!("; connect pacing cost {:.1} s", run.pacing.as_secs_f64())
        }
    );
    let _ = writeln!(out, "{}", s.line());
    out
}
