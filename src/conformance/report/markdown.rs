//! Markdown: a summary line and one table row per case, failures detailed below.

use super::super::verdict::{RunOutcome, Verdict};

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub fn render(run: &RunOutcome) -> String {
    let s = run.summary();
    let mut out = format!(
        "# Conformance: {}\n\n**{}** ({} non-strict) in {:.1} s{}{}\n\n",
        run.target,
        s.line(),
        s.non_strict,
        run.duration.as_secs_f64(),
        if run.pacing.is_zero() {
            String::new()
        } else {
            format!(
                ", {:.1} s of it waiting for the connect budget",
                run.pacing.as_secs_f64()
            )
        },
        if run.strict { ", strict" } else { "" }
    );
    out.push_str("| verdict | case | SPEC | level | detail |\n|---|---|---|---|---|\n");
    for r in &run.results {
        let mark = match r.verdict {
            Verdict::Pass => "✅ pass",
            Verdict::NonStrict => "⚠️ non-strict",
            Verdict::Fail => "❌ fail",
            Verdict::Skip => "⏭ skip",
        };
        out.push_str(&format!(
            "| {mark} | `{}` | {} | {}{} | {} |\n",
            r.id,
            r.spec.join(", "),
            r.level,
            if r.choice { " [choice]" } else { "" },
            cell(&r.detail)
        ));
    }
    let failed: Vec<_> = run
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .collect();
    if !failed.is_empty() {
        out.push_str("\n## Failures\n");
        for r in failed {
            out.push_str(&format!(
                "\n### `{}` ({})\n\n{}\n",
                r.id,
                r.spec.join(", "),
                r.title
            ));
            if let Some(f) = &r.failure {
                out.push_str(&format!(
                    "\n- {}\n- expected: `{}`\n- actual: `{}`\n",
                    cell(&f.step),
                    cell(&f.expected),
                    cell(&f.actual)
                ));
                for super::super::verdict::Transcript { label: peer, lines } in &f.seen {
                    out.push_str(&format!("\n{peer}:\n\n```\n"));
                    for l in lines {
                        out.push_str(l);
                        out.push('\n');
                    }
                    out.push_str("```\n");
                }
            }
        }
    }
    out
}
