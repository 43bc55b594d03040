//! What a peer saw during a case, bounded: the first and last lines plus counts by kind,
//! so a server that floods (pings, amplified frames) cannot grow the harness's memory,
//! and a failure still shows how the exchange began and how it ended.

use std::collections::{BTreeMap, VecDeque};

/// Lines kept from the start and from the end.
const HEAD: usize = 20;
const TAIL: usize = 40;

#[derive(Debug, Default)]
pub struct Log {
    head: Vec<String>,
    tail: VecDeque<String>,
    /// Lines recorded in all.
    total: u64,
    /// Lines recorded by kind (`text`, `ping`, `note`, …).
    by_kind: BTreeMap<&'static str, u64>,
}

impl Log {
    pub fn push(&mut self, kind: &'static str, line: String) {
        self.total += 1;
        *self.by_kind.entry(kind).or_default() += 1;
        if self.head.len() < HEAD {
            self.head.push(line);
            return;
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many lines of `kind` were recorded.
    pub fn count(&self, kind: &str) -> u64 {
        self.by_kind.get(kind).copied().unwrap_or(0)
    }

    /// The kept lines, with one line saying what was left out between them.
    pub fn lines(&self) -> Vec<String> {
        let kept = (self.head.len() + self.tail.len()) as u64;
        let mut out = self.head.clone();
        if self.total > kept {
            let kinds: Vec<String> = self
                .by_kind
                .iter()
                .map(|(k, n)| format!("{k} × {}", group(*n)))
                .collect();
            out.push(format!(
                "  … {} lines not shown (all lines by kind: {})",
                group(self.total - kept),
                kinds.join(", ")
            ));
        }
        out.extend(self.tail.iter().cloned());
        out
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_keeps_head_tail_and_counts() {
        let mut log = Log::default();
        log.push("text", "  welcome".into());
        for i in 0..1_000_000 {
            log.push("ping", format!("  (ping control frame) {i}"));
        }
        let lines = log.lines();
        assert_eq!(lines.len(), HEAD + TAIL + 1);
        assert_eq!(lines[0], "  welcome");
        assert!(
            lines[HEAD].contains("999,941 lines not shown"),
            "{}",
            lines[HEAD]
        );
        assert!(lines[HEAD].contains("ping × 1,000,000"), "{}", lines[HEAD]);
        assert!(lines.last().unwrap().ends_with("999999"));
        assert_eq!(log.count("ping"), 1_000_000);
    }

    #[test]
    fn short_logs_are_whole() {
        let mut log = Log::default();
        log.push("text", "a".into());
        log.push("note", "b".into());
        assert_eq!(log.lines(), ["a", "b"]);
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
    }
}
