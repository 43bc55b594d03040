//! Verdicts: what one case's run means, and the tally of a whole run.

use std::time::Duration;

use serde::Serialize;

use super::case::{Case, Level};

/// The outcome of one case (graded as Autobahn does: a pass with a tolerated deviation
/// is "non-strict").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// Passed with a deviation SPEC tolerates, or a `should`/`info` case that failed
    /// without `--strict`.
    NonStrict,
    Fail,
    Skip,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NonStrict => "non_strict",
            Verdict::Fail => "fail",
            Verdict::Skip => "skip",
        }
    }
}

/// What went wrong, for people: the step, what was expected, what came instead and the
/// frames each peer saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Failure {
    /// e.g. `step 3 (line 41, peer a): expect`.
    pub step: String,
    pub expected: String,
    pub actual: String,
    /// Transcripts, labelled (`frames seen by a`, `REST calls`): what each peer
    /// received, in order, and the REST calls made.
    pub seen: Vec<Transcript>,
}

/// One labelled transcript of a failed case.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Transcript {
    pub label: String,
    pub lines: Vec<String>,
}

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    pub area: String,
    pub spec: Vec<String>,
    pub level: Level,
    pub choice: bool,
    pub verdict: Verdict,
    /// One line: why it failed, was skipped or is non-strict; empty for a clean pass.
    pub detail: String,
    pub failure: Option<Failure>,
    pub duration: Duration,
}

impl CaseResult {
    pub fn skipped(case: &Case, why: impl Into<String>) -> CaseResult {
        CaseResult {
            id: case.id.clone(),
            title: case.title.clone(),
            area: case.area.clone(),
            spec: case.spec.clone(),
            level: case.level,
            choice: case.choice,
            verdict: Verdict::Skip,
            detail: why.into(),
            failure: None,
            duration: Duration::ZERO,
        }
    }
}

/// Grades a raw outcome by the case's level: a failed `should` case is non-strict unless
/// `strict`; a failed `info` case is always non-strict; a non-strict deviation fails
/// under `strict`.
pub fn grade(level: Level, raw: Verdict, strict: bool) -> Verdict {
    match (raw, level, strict) {
        (Verdict::Fail, Level::Must, _) => Verdict::Fail,
        (Verdict::Fail, Level::Should, true) => Verdict::Fail,
        (Verdict::Fail, _, _) => Verdict::NonStrict,
        (Verdict::NonStrict, Level::Info, _) => Verdict::NonStrict,
        (Verdict::NonStrict, _, true) => Verdict::Fail,
        (v, _, _) => v,
    }
}

/// Counts of a run. `passed` includes non-strict passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub non_strict: usize,
}

impl Summary {
    pub fn of(results: &[CaseResult]) -> Summary {
        let mut s = Summary::default();
        for r in results {
            match r.verdict {
                Verdict::Pass => s.passed += 1,
                Verdict::NonStrict => {
                    s.passed += 1;
                    s.non_strict += 1;
                }
                Verdict::Fail => s.failed += 1,
                Verdict::Skip => s.skipped += 1,
            }
        }
        s
    }

    /// The closing line: `N passed, M failed, K skipped`.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// Everything a run produced, for the reporters.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub target: String,
    pub results: Vec<CaseResult>,
    pub duration: Duration,
    /// Time connects spent waiting for the connect budget or a 429 to pass.
    pub pacing: Duration,
    pub strict: bool,
}

impl RunOutcome {
    pub fn summary(&self) -> Summary {
        Summary::of(&self.results)
    }

    /// 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.results.iter().any(|r| r.verdict == Verdict::Fail) {
            1
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grading() {
        assert_eq!(grade(Level::Must, Verdict::Fail, false), Verdict::Fail);
        assert_eq!(
            grade(Level::Should, Verdict::Fail, false),
            Verdict::NonStrict
        );
        assert_eq!(grade(Level::Should, Verdict::Fail, true), Verdict::Fail);
        assert_eq!(grade(Level::Info, Verdict::Fail, true), Verdict::NonStrict);
        assert_eq!(
            grade(Level::Must, Verdict::NonStrict, false),
            Verdict::NonStrict
        );
        assert_eq!(grade(Level::Must, Verdict::NonStrict, true), Verdict::Fail);
        assert_eq!(grade(Level::Must, Verdict::Pass, true), Verdict::Pass);
        assert_eq!(grade(Level::Must, Verdict::Skip, true), Verdict::Skip);
    }
}
