//! Channel patterns (SPEC §5): `*` matches a run without `/`, `**` (or any longer run of
//! unescaped stars, PAT-6) matches any run, `\*` and `\\` are literals, and a pattern
//! matches the whole name (PAT-5).

/// One token of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`: zero or more characters other than `/` (PAT-2).
    Segment,
    /// `**`: zero or more characters of any kind (PAT-3).
    Any,
}

/// A compiled channel pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

impl Pattern {
    /// Compiles `pattern`; every string is a valid pattern.
    pub fn new(pattern: &str) -> Self {
        let mut tokens = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some('*') | Some('\\') => {
                        tokens.push(Token::Literal(chars.next().unwrap_or('\\')))
                    }
                    // PAT-4 [choice]: a lone backslash is literal; the next char is read normally.
                    _ => tokens.push(Token::Literal('\\')),
                },
                '*' => {
                    let mut run = 1;
                    while chars.peek() == Some(&'*') {
                        chars.next();
                        run += 1;
                    }
                    tokens.push(if run == 1 { Token::Segment } else { Token::Any });
                }
                c => tokens.push(Token::Literal(c)),
            }
        }
        Pattern {
            source: pattern.to_owned(),
            tokens,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern has any wildcard token (an unescaped `*`, SUB-12).
    pub fn is_wildcard(&self) -> bool {
        self.tokens.iter().any(|t| !matches!(t, Token::Literal(_)))
    }

    /// Whether the whole of `name` matches (PAT-5).
    pub fn matches(&self, name: &str) -> bool {
        // Dynamic programming over (token, char) keeps worst cases like `*a*a*a*b` linear-ish:
        // `reachable[j]` says the tokens consumed so far can end right before char j.
        let chars: Vec<char> = name.chars().collect();
        let n = chars.len();
        let mut reachable = vec![false; n + 1];
        reachable[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; n + 1];
            match token {
                Token::Literal(c) => {
                    for j in 0..n {
                        if reachable[j] && chars[j] == *c {
                            next[j + 1] = true;
                        }
                    }
                }
                Token::Segment => {
                    for j in 0..=n {
                        next[j] = reachable[j] || (j > 0 && next[j - 1] && chars[j - 1] != '/');
                    }
                }
                Token::Any => {
                    for j in 0..=n {
                        next[j] = reachable[j] || (j > 0 && next[j - 1]);
                    }
                }
            }
            reachable = next;
            if !reachable.iter().any(|r| *r) {
                return false;
            }
        }
        reachable[n]
    }
}

/// Whether a channel string contains an unescaped `*`, i.e. names a wildcard subscription.
pub fn is_wildcard(channel: &str) -> bool {
    Pattern::new(channel).is_wildcard()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked-examples table of SPEC §5.
    #[test]
    fn spec_table() {
        let names = ["tenant9/lobby", "tenant9/a/b", "other/lobby", "tenant9/"];
        let rows: [(&str, [bool; 4]); 6] = [
            ("tenant9/*", [true, false, false, true]),
            ("tenant9/**", [true, true, false, true]),
            ("**", [true, true, true, true]),
            ("tenant9/lob*", [true, false, false, false]),
            ("*/lobby", [true, false, true, false]),
            ("tenant9/\\*", [false, false, false, false]),
        ];
        for (pattern, expected) in rows {
            let p = Pattern::new(pattern);
            for (name, want) in names.iter().zip(expected) {
                assert_eq!(p.matches(name), want, "{pattern} vs {name}");
            }
        }
        assert!(Pattern::new("tenant9/\\*").matches("tenant9/*"));
    }

    #[test]
    fn docs_shorthand_and_literals() {
        let p = Pattern::new("room-*");
        assert!(p.matches("room-42"));
        assert!(!p.matches("admin-1"));
        assert!(Pattern::new("Room-1").matches("Room-1"));
        assert!(!Pattern::new("Room-1").matches("room-1"));
        assert!(!Pattern::new("room").matches("room-1"));
    }

    #[test]
    fn runs_of_stars_and_escapes() {
        assert!(Pattern::new("a/***").matches("a/b/c"));
        assert!(Pattern::new("a\\\\b").matches("a\\b"));
        assert!(Pattern::new("a\\b").matches("a\\b"));
        assert!(Pattern::new("a\\").matches("a\\"));
        assert!(!Pattern::new("a\\*").is_wildcard());
        assert!(Pattern::new("devices/*/events").is_wildcard());
        assert!(Pattern::new("devices/*/events").matches("devices/d1/events"));
        assert!(!Pattern::new("devices/*/events").matches("devices/d1/x/events"));
        assert!(Pattern::new("acme/team/**").matches("acme/team/a/b"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let p = Pattern::new(&"*a".repeat(60));
        assert!(!p.matches(&"a".repeat(59)));
        assert!(p.matches(&"a".repeat(200)));
    }
}
