//! JSON compared as text, for the matcher's `$raw` and `$ordered` operators.
//!
//! `serde_json::Value` (without `preserve_order`) sorts object members and keeps numbers
//! as `u64`/`i64`/`f64`, so a frame parsed into it has lost what relay rules are about:
//! member order, number spelling, escapes. These helpers work on the frame's own text:
//! [`member`] and [`element`] find the text of a member or element, [`ordered_eq`] compares
//! two JSON texts as values whose objects are ordered.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The text of member `key` of the JSON object `text` (the last one if repeated, as
/// serde_json's own maps keep it).
pub fn member<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let Members(members) = serde_json::from_str(text).ok()?;
    members
        .into_iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.get())
}

/// The text of element `i` of the JSON array `text`.
pub fn element(text: &str, i: usize) -> Option<&str> {
    let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
    items.get(i).map(|v| v.get())
}

/// An object's members in the order written, values as raw text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Whether two JSON texts hold the same value with objects compared as *ordered*: the
/// same members in the same order, strings equal once unescaped, numbers equal exactly
/// (integers digit for digit, so 9007199254740993 ≠ 9007199254740992; `1.50` = `1.5`).
/// Whitespace and escape spelling do not matter. `Err` says where the texts differ.
pub fn ordered_eq(want: &str, got: &str) -> Result<(), String> {
    compare(want.trim(), got.trim(), "")
}

fn compare(want: &str, got: &str, path: &str) -> Result<(), String> {
    let here = if path.is_empty() { "the value" } else { path };
    let differ = |what: &str| Err(format!("{here}: {what}: expected {want}, got {got}"));
    match (want.as_bytes().first(), got.as_bytes().first()) {
        (Some(b'{'), Some(b'{')) => {
            let (Ok(Members(w)), Ok(Members(g))) =
                (serde_json::from_str(want), serde_json::from_str(got))
            else {
                return differ("not a JSON object");
            };
            let wk: Vec<&str> = w.iter().map(|(k, _)| k.as_str()).collect();
            let gk: Vec<&str> = g.iter().map(|(k, _)| k.as_str()).collect();
            if wk != gk {
                return Err(format!(
                    "{here}: members {wk:?} expected in this order, got {gk:?}"
                ));
            }
            for ((k, wv), (_, gv)) in w.iter().zip(&g) {
                compare(wv.get(), gv.get(), &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Some(b'['), Some(b'[')) => {
            let (Ok(w), Ok(g)) = (
                serde_json::from_str::<Vec<&RawValue>>(want),
                serde_json::from_str::<Vec<&RawValue>>(got),
            ) else {
                return differ("not a JSON array");
            };
            if w.len() != g.len() {
                return differ(&format!("{} element(s) instead of {}", g.len(), w.len()));
            }
            for (i, (wv, gv)) in w.iter().zip(&g).enumerate() {
                compare(wv.get(), gv.get(), &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Some(b'"'), Some(b'"')) => {
            match (
                serde_json::from_str::<String>(want),
                serde_json::from_str::<String>(got),
            ) {
                (Ok(w), Ok(g)) if w == g => Ok(()),
                _ => differ("different string"),
            }
        }
        (Some(w), Some(g)) if is_number_start(*w) && is_number_start(*g) => {
            if numbers_eq(want, got) {
                Ok(())
            } else {
                differ("different number")
            }
        }
        _ if want == got => Ok(()),
        _ => differ("different value"),
    }
}

fn is_number_start(b: u8) -> bool {
    b == b'-' || b.is_ascii_digit()
}

/// Integers (no fraction, no exponent) compare digit for digit; anything else as `f64`,
/// unless either side is an integer too large for `f64` to hold exactly.
fn numbers_eq(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let integer = |s: &str| !s.contains(['.', 'e', 'E']);
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => {
            let big = |s: &str, v: f64| integer(s) && v.abs() >= EXACT;
            // Two integers differed as text, so they differ; a float cannot vouch for a big one.
            let undecidable = (integer(a) && integer(b)) || big(a, x) || big(b, y);
            !undecidable && x == y
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_elements() {
        let t =
            r#"{"type":"presence","joined":[{"peerId":"a","metadata":{"z":1,"a":2}}],"x":1,"x":2}"#;
        assert_eq!(member(t, "type"), Some(r#""presence""#));
        assert_eq!(member(t, "x"), Some("2"));
        let joined = member(t, "joined").unwrap();
        let first = element(joined, 0).unwrap();
        assert_eq!(member(first, "metadata"), Some(r#"{"z":1,"a":2}"#));
        assert_eq!(element(joined, 1), None);
        assert_eq!(member("[1]", "x"), None);
    }

    #[test]
    fn ordered_equality() {
        let ok = |a: &str, b: &str| ordered_eq(a, b).is_ok();
        assert!(ok(
            r#"{"name":"Ann","color":"teal"}"#,
            r#"{ "name" : "Ann", "color":"teal" }"#
        ));
        assert!(!ok(
            r#"{"name":"Ann","color":"teal"}"#,
            r#"{"color":"teal","name":"Ann"}"#
        ));
        assert!(ok(r#"{"u":"\u00e9"}"#, r#"{"u":"é"}"#));
        assert!(ok("1.50", "1.5"));
        assert!(ok("1e2", "100.0"));
        assert!(!ok("9007199254740993", "9007199254740992"));
        assert!(!ok("9007199254740993", "9007199254740993.0"));
        assert!(!ok("12", "12.5"));
        assert!(ok("[1,{\"a\":[true,null]}]", "[1, {\"a\": [true, null]}]"));
        assert!(!ok("[1,2]", "[2,1]"));
        assert!(!ok(r#"{"a":1}"#, r#"{"a":1,"b":2}"#));
        assert!(!ok("null", "0"));
        let why = ordered_eq(r#"{"o":{"b":1,"a":2}}"#, r#"{"o":{"a":2,"b":1}}"#).unwrap_err();
        assert!(why.contains(".o"), "{why}");
    }
}
