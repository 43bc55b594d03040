//! Placeholders and the JSON subset match used by `expect` steps.
//!
//! Placeholders `{name}` are replaced in everything a case sends or expects: `{run}`
//! (the case's unique prefix), `{room}`, `{peer.a}`, `{exp.a}`, `{i}`, captured values,
//! `{uniq:N}` (a unique string of exactly N bytes), `{x:N}` (N times `x`), `{now}`,
//! integer arithmetic `{name+N}` / `{name-N}` (e.g. `{now+60}`), and any of
//! them with a filter: `|url` (percent-encoded for a URL path), `|jwt_header` or
//! `|jwt_claims` (a token's decoded header or claims). `{{` is a literal `{`.
//! A string that is exactly one placeholder takes the value's JSON type (`"{exp.a}"` is a
//! number).
//!
//! In expected values, whole strings can also be matchers: `{any}` (present, any value),
//! `{absent}` (member must be missing), `{null}`, `{string}`, `{int}`, `{number}`,
//! `{bool}`, `{object}`, `{array}`, `{positive}`, `{uuid}`, `{unix_s}` (integer seconds
//! within a minute of now) and `{=name}` (capture the value as `{name}`). Objects with a
//! single `$` key are operators: `$set` (array equal up to order), `$contains` (array
//! contains each), `$len`, `$not`, `$one_of`, `$eq` (exact equality), and two that look
//! at the text the server sent rather than its parsed value (see [`super::rawjson`]):
//! `$raw = "<json>"` (the member's JSON text is exactly this, byte for byte) and
//! `$ordered = "<json>"` (the same value with members in the same order and integers
//! exact; whitespace and escape spelling free). Both need the frame's text
//! ([`match_frame`]).
//!
//! Objects match as subsets (unknown members are ignored, FRAME-3) except under the keys
//! `data`, `metadata` and `fromMetadata`, which carry relayed payloads and must be equal.
//! Arrays match element by element and must have the same length.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// What `|url` escapes: everything but RFC 3986 unreserved characters, so a `/` inside a
/// channel name becomes `%2F` (REST-11).
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Values placeholders resolve to; one set per running case.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    map: HashMap<String, Value>,
}

/// Characters allowed inside a placeholder's braces.
fn placeholder_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.:=|+-".contains(c)
}

impl Vars {
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<Value>) {
        self.map.insert(name.into(), value.into());
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    /// The value of one placeholder body (without braces), filters applied.
    pub fn resolve(&self, body: &str) -> Result<Value, String> {
        let (name, filter) = match body.split_once('|') {
            Some((n, f)) => (n, Some(f)),
            None => (body, None),
        };
        let value = if let Some(n) = name.strip_prefix("uniq:") {
            let n: usize = n
                .parse()
                .map_err(|_| format!("`{{{body}}}`: uniq:N needs a number"))?;
            let run = self.map.get("run").and_then(Value::as_str).unwrap_or("u");
            let mut s = format!("{run}-");
            if s.len() > n {
                s.truncate(n);
            }
            while s.len() < n {
                s.push('x');
            }
            Value::String(s)
        } else if let Some(n) = name.strip_prefix("x:") {
            let n: usize = n
                .parse()
                .map_err(|_| format!("`{{{body}}}`: x:N needs a number"))?;
            Value::String("x".repeat(n))
        } else if name == "now" {
            Value::from(now_s())
        } else if let Some(v) = self.arithmetic(name) {
            v
        } else {
            self.map
                .get(name)
                .cloned()
                .ok_or_else(|| format!("unknown placeholder `{{{name}}}`"))?
        };
        match filter {
            None => Ok(value),
            Some("url") => {
                let text = match &value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Ok(Value::String(
                    percent_encoding::utf8_percent_encode(&text, PATH_SEGMENT).to_string(),
                ))
            }
            Some(f @ ("jwt_header" | "jwt_claims")) => {
                use base64::Engine;
                let token = value.as_str().unwrap_or_default();
                let part = token.split('.').nth(if f == "jwt_header" { 0 } else { 1 });
                let decoded = part
                    .and_then(|p| {
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(p)
                            .ok()
                    })
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                decoded.ok_or_else(|| format!("`{{{body}}}`: not a JWT"))
            }
            Some(f) => Err(format!(
                "unknown filter `|{f}` in `{{{body}}}`; use |url, |jwt_header or |jwt_claims"
            )),
        }
    }

    /// `{name+N}` / `{name-N}` on an integer value (e.g. `{now+60}`, `{mms+1}`).
    fn arithmetic(&self, name: &str) -> Option<Value> {
        let at = name.rfind(['+', '-'])?;
        let (base, op, n) = (&name[..at], &name[at..at + 1], &name[at + 1..]);
        let n: i64 = n.parse().ok()?;
        let base = if base == "now" {
            now_s()
        } else {
            self.map.get(base)?.as_i64()?
        };
        Some(Value::from(if op == "+" { base + n } else { base - n }))
    }

    /// Replaces placeholders in text (raw frames, URLs, headers).
    pub fn text(&self, s: &str) -> Result<String, String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            if let Some(stripped) = after.strip_prefix('{') {
                out.push('{');
                rest = stripped;
                continue;
            }
            let end = after.find(|c: char| !placeholder_char(c));
            match end {
                Some(e) if e > 0 && after[e..].starts_with('}') => {
                    let value = self.resolve(&after[..e])?;
                    match value {
                        Value::String(v) => out.push_str(&v),
                        other => out.push_str(&other.to_string()),
                    }
                    rest = &after[e + 1..];
                }
                _ => {
                    out.push('{');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A string value: a lone placeholder keeps its type, otherwise text substitution.
    fn string(&self, s: &str) -> Result<Value, String> {
        if let Some(body) = lone_placeholder(s) {
            return self.resolve(body);
        }
        self.text(s).map(Value::String)
    }

    /// Replaces placeholders everywhere in a JSON value (strings only, not keys).
    pub fn value(&self, v: &Value) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) => self.string(s)?,
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.value(i))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), self.value(v)?)))
                    .collect::<Result<Map<_, _>, String>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// `Some(body)` when `s` is exactly `{body}`.
fn lone_placeholder(s: &str) -> Option<&str> {
    let body = s.strip_prefix('{')?.strip_suffix('}')?;
    (!body.is_empty() && body.chars().all(placeholder_char)).then_some(body)
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The result of matching one expected value against what arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Match,
    /// Matches, but with a deviation SPEC tolerates (a `null` where a member should be
    /// omitted, FRAME-13).
    NonStrict(String),
    Mismatch(String),
}

/// Matches `expected` against `actual` (`None` = member absent). Captures `{=name}`
/// values into `captures`.
pub fn match_value(
    expected: &Value,
    actual: Option<&Value>,
    vars: &Vars,
    captures: &mut Vec<(String, Value)>,
) -> Outcome {
    match_with_text(expected, actual, None, vars, captures)
}

/// [`match_value`] for a frame (or body) that arrived as `text`, so `$raw` and
/// `$ordered` can see its members as written.
pub fn match_frame(
    expected: &Value,
    actual: &Value,
    text: &str,
    vars: &Vars,
    captures: &mut Vec<(String, Value)>,
) -> Outcome {
    match_with_text(expected, Some(actual), Some(text), vars, captures)
}

fn match_with_text(
    expected: &Value,
    actual: Option<&Value>,
    text: Option<&str>,
    vars: &Vars,
    captures: &mut Vec<(String, Value)>,
) -> Outcome {
    let mut notes = Vec::new();
    let at = Here {
        path: "",
        text,
        exact: false,
    };
    match walk(expected, actual, vars, captures, at, &mut notes) {
        Err(why) => Outcome::Mismatch(why),
        Ok(()) if notes.is_empty() => Outcome::Match,
        Ok(()) => Outcome::NonStrict(notes.join("; ")),
    }
}

fn show(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => super::client::clip(&v.to_string(), 200),
    }
}

/// Where a match stands: the member path (for messages), the actual value's JSON text
/// when known (for `$raw` / `$ordered`), and whether objects must match exactly.
#[derive(Clone, Copy)]
struct Here<'a> {
    path: &'a str,
    text: Option<&'a str>,
    exact: bool,
}

/// Whether `expected` holds a `$raw` or `$ordered` operator, i.e. needs the text.
fn wants_text(expected: &Value) -> bool {
    match expected {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k == "$raw" || k == "$ordered" || wants_text(v)),
        Value::Array(items) => items.iter().any(wants_text),
        _ => false,
    }
}

/// The text of member `key` / element `i` under `text`, looked up only when `expected`
/// needs it (parsing a large frame's text again per member is not free).
fn child_text<'a>(
    text: Option<&'a str>,
    expected: &Value,
    key: Result<&str, usize>,
) -> Option<&'a str> {
    let text = text.filter(|_| wants_text(expected))?;
    match key {
        Ok(k) => super::rawjson::member(text, k),
        Err(i) => super::rawjson::element(text, i),
    }
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the frame".into()
    } else {
        format!("`{path}`")
    }
}

fn walk(
    expected: &Value,
    actual: Option<&Value>,
    vars: &Vars,
    captures: &mut Vec<(String, Value)>,
    here: Here<'_>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let Here { path, exact, .. } = here;
    let mismatch = |want: &str| {
        Err(format!(
            "{}: expected {want}, got {}",
            at(path),
            show(actual)
        ))
    };
    if let Value::String(s) = expected
        && let Some(body) = lone_placeholder(s)
    {
        let typed = |ok: bool, want: &str| if ok { Ok(()) } else { mismatch(want) };
        match body {
            "absent" => {
                return match actual {
                    None => Ok(()),
                    Some(Value::Null) => {
                        notes.push(format!(
                            "{} is null instead of omitted (FRAME-13)",
                            at(path)
                        ));
                        Ok(())
                    }
                    Some(_) => mismatch("the member to be absent"),
                };
            }
            "any" => return typed(actual.is_some(), "a value"),
            "null" => return typed(actual == Some(&Value::Null), "null"),
            "string" => return typed(actual.is_some_and(Value::is_string), "a string"),
            "int" => {
                return typed(
                    actual.is_some_and(|v| v.is_i64() || v.is_u64()),
                    "an integer",
                );
            }
            "number" => return typed(actual.is_some_and(Value::is_number), "a number"),
            "bool" => return typed(actual.is_some_and(Value::is_boolean), "a boolean"),
            "object" => return typed(actual.is_some_and(Value::is_object), "an object"),
            "array" => return typed(actual.is_some_and(Value::is_array), "an array"),
            "positive" => {
                return typed(
                    actual.and_then(Value::as_i64).is_some_and(|n| n > 0),
                    "a positive integer",
                );
            }
            "uuid" => {
                return typed(
                    actual.and_then(Value::as_str).is_some_and(is_uuid_v4),
                    "a lowercase hyphenated v4 UUID",
                );
            }
            "unix_s" => {
                return typed(
                    actual
                        .and_then(Value::as_i64)
                        .is_some_and(|n| (n - now_s()).abs() <= 60),
                    "integer Unix seconds within a minute of now",
                );
            }
            _ => {}
        }
        if let Some(name) = body.strip_prefix('=') {
            return match actual {
                Some(v) => {
                    captures.push((name.to_owned(), v.clone()));
                    Ok(())
                }
                None => mismatch("a value to capture"),
            };
        }
    }
    if let Value::Object(ops) = expected
        && ops.len() == 1
        && let Some((op, arg)) = ops.iter().next()
        && op.starts_with('$')
    {
        return operator(op, arg, actual, vars, captures, here, notes);
    }
    match expected {
        Value::Object(want) if !exact => {
            let Some(Value::Object(got)) = actual else {
                return mismatch("an object");
            };
            for (k, v) in want {
                let child = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let exact_child = matches!(k.as_str(), "data" | "metadata" | "fromMetadata");
                let inner = Here {
                    path: &child,
                    text: child_text(here.text, v, Ok(k)),
                    exact: exact_child,
                };
                walk(v, got.get(k), vars, captures, inner, notes)?;
            }
            Ok(())
        }
        Value::Object(want) => {
            let Some(Value::Object(got)) = actual else {
                return mismatch("an object");
            };
            let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
            if !extra.is_empty() {
                return mismatch(&format!("exactly {}", show(Some(expected))));
            }
            for (k, v) in want {
                let child = format!("{path}.{k}");
                let inner = Here {
                    path: &child,
                    text: child_text(here.text, v, Ok(k)),
                    exact: true,
                };
                walk(v, got.get(k), vars, captures, inner, notes)?;
            }
            Ok(())
        }
        Value::Array(want) => {
            let Some(Value::Array(got)) = actual else {
                return mismatch("an array");
            };
            if want.len() != got.len() {
                return mismatch(&format!("an array of {} element(s)", want.len()));
            }
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                let child = format!("{path}[{i}]");
                let inner = Here {
                    path: &child,
                    text: child_text(here.text, w, Err(i)),
                    exact,
                };
                walk(w, Some(g), vars, captures, inner, notes)?;
            }
            Ok(())
        }
        Value::String(s) => {
            let want = vars.string(s).map_err(|e| format!("{}: {e}", at(path)))?;
            if let Value::String(_) = want {
                if actual == Some(&want) {
                    Ok(())
                } else {
                    mismatch(&want.to_string())
                }
            } else {
                // A lone placeholder of another type, e.g. `{exp.a}`.
                walk(&want, actual, vars, captures, here, notes)
            }
        }
        Value::Number(n) => match actual {
            Some(Value::Number(m)) if numbers_equal(n, m) => Ok(()),
            _ => mismatch(&n.to_string()),
        },
        other => {
            if actual == Some(other) {
                Ok(())
            } else {
                mismatch(&other.to_string())
            }
        }
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => x == y,
        (_, _, Some(x), Some(y)) => x == y,
        _ => a.as_f64() == b.as_f64(),
    }
}

fn operator(
    op: &str,
    arg: &Value,
    actual: Option<&Value>,
    vars: &Vars,
    captures: &mut Vec<(String, Value)>,
    here: Here<'_>,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let path = here.path;
    let loose = Here {
        exact: false,
        ..here
    };
    let fail = |want: String| {
        Err(format!(
            "{}: expected {want}, got {}",
            at(path),
            show(actual)
        ))
    };
    match op {
        "$eq" => {
            let want = vars.value(arg).map_err(|e| format!("{}: {e}", at(path)))?;
            if actual == Some(&want) {
                Ok(())
            } else {
                fail(format!("exactly {want}"))
            }
        }
        "$len" => {
            let n = arg.as_u64().ok_or("`$len` needs a number")? as usize;
            match actual {
                Some(Value::Array(a)) if a.len() == n => Ok(()),
                _ => fail(format!("an array of {n} element(s)")),
            }
        }
        "$not" => {
            let mut scratch = Vec::new();
            let mut n = Vec::new();
            match walk(arg, actual, vars, &mut scratch, loose, &mut n) {
                Ok(()) => fail(format!("anything but {arg}")),
                Err(_) => Ok(()),
            }
        }
        "$one_of" => {
            let options = arg.as_array().ok_or("`$one_of` needs an array")?;
            for option in options {
                let mut c = Vec::new();
                let mut n = Vec::new();
                if walk(option, actual, vars, &mut c, loose, &mut n).is_ok() {
                    captures.extend(c);
                    notes.extend(n);
                    return Ok(());
                }
            }
            fail(format!("one of {arg}"))
        }
        "$set" | "$contains" => {
            let want = arg.as_array().ok_or("`$set`/`$contains` need an array")?;
            let Some(Value::Array(got)) = actual else {
                return fail("an array".into());
            };
            if op == "$set" && want.len() != got.len() {
                return fail(format!(
                    "an array of {} element(s) in any order",
                    want.len()
                ));
            }
            let mut used = vec![false; got.len()];
            let element = |w: &Value, i: usize| Here {
                text: child_text(here.text, w, Err(i)),
                ..loose
            };
            for w in want {
                let found = got.iter().enumerate().find(|(i, g)| {
                    !used[*i] && {
                        let mut c = Vec::new();
                        let mut n = Vec::new();
                        walk(w, Some(g), vars, &mut c, element(w, *i), &mut n).is_ok()
                    }
                });
                match found {
                    Some((i, g)) => {
                        used[i] = true;
                        // Re-run to keep captures and notes of the chosen element.
                        walk(w, Some(g), vars, captures, element(w, i), notes)?;
                    }
                    None => return fail(format!("an element matching {w}")),
                }
            }
            Ok(())
        }
        "$raw" | "$ordered" => {
            let want = vars.value(arg).map_err(|e| format!("{}: {e}", at(path)))?;
            let Value::String(want) = want else {
                return Err(format!(
                    "{}: `{op}` needs a string holding JSON text, e.g. '{{\"a\":1}}'",
                    at(path)
                ));
            };
            let Some(got) = here.text else {
                return fail(format!("the JSON text {want}"));
            };
            if op == "$raw" {
                if got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: expected exactly the text {want}, got the text {}",
                        at(path),
                        super::client::clip(got, 300)
                    ))
                }
            } else {
                super::rawjson::ordered_eq(&want, got).map_err(|why| format!("{}: {why}", at(path)))
            }
        }
        other => Err(format!(
            "{}: unknown operator `{other}`; use $eq, $len, $not, $one_of, $set, $contains, $raw or $ordered",
            at(path)
        )),
    }
}

/// A lowercase, hyphenated RFC 4122 version-4 UUID (AUTH-3).
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}

#[cfg(test)]
mod tests;
