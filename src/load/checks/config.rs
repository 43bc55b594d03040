//! How a scenario relaxes the built-in checks: the `[checks]` table and `--allow`.
//!
//! ```toml
//! [checks]
//! acks = "off"                          # not checked
//! lost = "<=10"                         # a tolerance: the count may be at most 10
//! unexpected = "<0.1%"                  # … or a share of the check's base
//! closes = { allow = [4011] }           # codes the scenario causes
//! errors = { allow = ["rate_limited"], tolerance = "<=5" }
//! ```
//!
//! `--allow` says the same on the command line: `--allow acks`, `--allow 'lost<=10'`,
//! `--allow closes:4011,1006`. Flags are folded into the scenario like every other flag,
//! so `scenario.toml` in the report shows what was relaxed.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::{ALLOW_LISTS, NAMES};
use crate::rules::{self, Suffix};

/// How one check is relaxed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Relax {
    /// Not checked at all.
    pub off: bool,
    /// `OP VALUE[%]` the check's count must meet instead of `==0`.
    pub tolerance: Option<String>,
    /// Keys the check does not count: close codes, error codes, failure or frame kinds.
    pub allow: Vec<String>,
}

/// The `[checks]` table: check name → how it is relaxed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChecksConfig(pub BTreeMap<String, Relax>);

impl ChecksConfig {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Relax> {
        self.0.get(name)
    }

    /// Folds `--allow` flags in (each already checked by [`parse_allow`]).
    pub fn apply(&mut self, flags: &[String]) {
        for f in flags {
            if let Ok((name, r)) = parse_allow(f) {
                let e = self.0.entry(name).or_default();
                e.off |= r.off;
                if r.tolerance.is_some() {
                    e.tolerance = r.tolerance;
                }
                for a in r.allow {
                    if !e.allow.contains(&a) {
                        e.allow.push(a);
                    }
                }
            }
        }
    }

    /// Checks names, tolerances and allow lists; the error is (check name, message).
    pub fn validate(&self) -> Result<(), (Option<&'static str>, String)> {
        for (name, r) in &self.0 {
            let Some(&static_name) = NAMES.iter().find(|n| **n == name.as_str()) else {
                return Err((
                    None,
                    format!(
                        "unknown check `{name}`; the checks are {}",
                        NAMES.join(", ")
                    ),
                ));
            };
            let at = |m: String| Err((Some(static_name), m));
            if let Some(t) = &r.tolerance {
                if name == "delivery" {
                    return at(
                        "takes no tolerance (it fails when no copy could be expected or none arrived); use \"off\"".into(),
                    );
                }
                match rules::parse_condition(t) {
                    Err(e) => {
                        return at(format!(
                            "tolerance \"{t}\": {}; write OP VALUE, e.g. \"<=10\" or \"<0.1%\"",
                            e.0
                        ));
                    }
                    Ok((_, l)) if matches!(l.suffix, Suffix::Unit(_)) => {
                        return at(format!(
                            "tolerance \"{t}\": a check counts events, so it takes a number or a percentage, not a time"
                        ));
                    }
                    Ok(_) => {}
                }
            }
            if !r.allow.is_empty() {
                match ALLOW_LISTS.iter().find(|(n, _)| *n == name.as_str()) {
                    None => {
                        return at(format!(
                            "takes no `allow` list (only {} do); give a tolerance such as \"<=10\" or \"off\"",
                            ALLOW_LISTS.map(|(n, _)| n).join(", ")
                        ));
                    }
                    Some(("closes", _)) => {
                        if let Some(bad) = r.allow.iter().find(|c| {
                            c.parse::<u16>()
                                .map_or(true, |n| !(1000..=4999).contains(&n))
                        }) {
                            return at(format!(
                                "`{bad}` is not a close code; allow codes such as 4011 or 1006"
                            ));
                        }
                    }
                    Some(_) => {
                        if let Some(bad) = r.allow.iter().find(|k| {
                            k.is_empty()
                                || !k
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                        }) {
                            return at(format!(
                                "`{bad}` is not a code or kind (letters, digits, `_`, `-`)"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Parses an `--allow` flag: `NAME` (off), `NAME OP VALUE` (tolerance) or `NAME:A,B`
/// (allowed codes or kinds). The error quotes the three forms.
pub fn parse_allow(spec: &str) -> Result<(String, Relax), String> {
    let forms = "write CHECK (turn it off), CHECK:A,B (allow these codes or kinds, e.g. closes:4011) or CHECK OP VALUE (a tolerance, e.g. 'lost<=10', 'unexpected<0.1%')";
    let t = spec.trim();
    let (name, relax) = if let Some((name, list)) = t.split_once(':') {
        let allow: Vec<String> = list
            .split(',')
            .map(|x| x.trim().to_owned())
            .filter(|x| !x.is_empty())
            .collect();
        if allow.is_empty() {
            return Err(format!("--allow {spec}: nothing after `:`; {forms}"));
        }
        (
            name.trim(),
            Relax {
                allow,
                ..Default::default()
            },
        )
    } else if let Some(cut) = t.find(['<', '>', '=', '!']) {
        (
            t[..cut].trim(),
            Relax {
                tolerance: Some(t[cut..].trim().to_owned()),
                ..Default::default()
            },
        )
    } else {
        (
            t,
            Relax {
                off: true,
                ..Default::default()
            },
        )
    };
    let cfg = ChecksConfig(BTreeMap::from([(name.to_owned(), relax.clone())]));
    cfg.validate()
        .map_err(|(_, m)| format!("--allow {spec}: {m}; {forms}"))?;
    Ok((name.to_owned(), relax))
}

impl<'de> Deserialize<'de> for ChecksConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = Map::<String, Value>::deserialize(d)?;
        let mut out = BTreeMap::new();
        for (name, v) in table {
            let r = match v {
                Value::String(s) if s.trim() == "off" => Relax {
                    off: true,
                    ..Default::default()
                },
                Value::String(s) if s.trim() == "on" => Relax::default(),
                Value::String(s) => Relax {
                    tolerance: Some(s.trim().to_owned()),
                    ..Default::default()
                },
                Value::Object(o) => relax_table(&name, o).map_err(de::Error::custom)?,
                other => {
                    return Err(de::Error::custom(format!(
                        "check `{name}` must be \"off\", a tolerance such as \"<=10\", or a table {{ allow = [...], tolerance = \"...\" }}, got {other}"
                    )));
                }
            };
            out.insert(name, r);
        }
        Ok(ChecksConfig(out))
    }
}

fn relax_table(name: &str, o: Map<String, Value>) -> Result<Relax, String> {
    let mut r = Relax::default();
    for (k, v) in o {
        match (k.as_str(), v) {
            ("allow", Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => r.allow.push(s),
                        Value::Number(n) => r.allow.push(n.to_string()),
                        other => {
                            return Err(format!(
                                "`checks.{name}.allow` holds codes or kinds (numbers or strings), got {other}"
                            ));
                        }
                    }
                }
            }
            ("tolerance", Value::String(s)) => r.tolerance = Some(s.trim().to_owned()),
            ("off", Value::Bool(b)) => r.off = b,
            (k, v) => {
                return Err(format!(
                    "`checks.{name}.{k}` = {v} is not understood; a check table takes `allow` (a list), `tolerance` (a string) and `off` (a bool)"
                ));
            }
        }
    }
    Ok(r)
}

impl Serialize for ChecksConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, r) in &self.0 {
            if r.allow.is_empty() && !(r.off && r.tolerance.is_some()) {
                let text = if r.off {
                    "off".to_owned()
                } else {
                    r.tolerance.clone().unwrap_or_else(|| "on".into())
                };
                m.serialize_entry(name, &text)?;
            } else {
                let mut t = Map::new();
                if !r.allow.is_empty() {
                    let items = r
                        .allow
                        .iter()
                        .map(|a| match a.parse::<u64>() {
                            Ok(n) if name == "closes" => Value::from(n),
                            _ => Value::from(a.clone()),
                        })
                        .collect();
                    t.insert("allow".into(), Value::Array(items));
                }
                if let Some(tol) = &r.tolerance {
                    t.insert("tolerance".into(), Value::from(tol.clone()));
                }
                if r.off {
                    t.insert("off".into(), Value::from(true));
                }
                m.serialize_entry(name, &t)?;
            }
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Doc {
        checks: ChecksConfig,
    }

    fn parse(text: &str) -> Result<ChecksConfig, String> {
        let d: Doc = toml::from_str(text).map_err(|e| e.to_string())?;
        d.checks.validate().map_err(|(_, m)| m)?;
        Ok(d.checks)
    }

    #[test]
    fn table_forms_parse_and_round_trip() {
        let c = parse(
            "[checks]\nacks = \"off\"\nlost = \"<=10\"\ncloses = { allow = [4011, 1006] }\nerrors = { allow = [\"rate_limited\"], tolerance = \"<1%\" }\n",
        )
        .unwrap();
        assert!(c.get("acks").unwrap().off);
        assert_eq!(c.get("lost").unwrap().tolerance.as_deref(), Some("<=10"));
        assert_eq!(c.get("closes").unwrap().allow, vec!["4011", "1006"]);
        let back = toml::to_string(&Doc { checks: c.clone() }).unwrap();
        assert_eq!(parse(&back).unwrap(), c, "{back}");
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[checks]\nakcs = \"off\"\n").unwrap_err();
        assert!(
            e.contains("unknown check `akcs`") && e.contains("acks"),
            "{e}"
        );
        let e = parse("[checks]\nlost = \"<=10ms\"\n").unwrap_err();
        assert!(e.contains("not a time"), "{e}");
        let e = parse("[checks]\nlost = \"ten\"\n").unwrap_err();
        assert!(e.contains("OP VALUE"), "{e}");
        let e = parse("[checks]\nlost = { allow = [1] }\n").unwrap_err();
        assert!(e.contains("takes no `allow`"), "{e}");
        let e = parse("[checks]\ncloses = { allow = [\"x\"] }\n").unwrap_err();
        assert!(e.contains("not a close code"), "{e}");
        let e = parse("[checks]\ndelivery = \"<=1\"\n").unwrap_err();
        assert!(e.contains("no tolerance"), "{e}");
        let e = parse("[checks]\ncloses = { alow = [1] }\n").unwrap_err();
        assert!(e.contains("alow"), "{e}");
    }

    #[test]
    fn allow_flags() {
        assert!(parse_allow("acks").unwrap().1.off);
        assert_eq!(
            parse_allow("lost<=10").unwrap().1.tolerance.as_deref(),
            Some("<=10")
        );
        assert_eq!(
            parse_allow("closes:4011, 1006").unwrap().1.allow,
            vec!["4011", "1006"]
        );
        let e = parse_allow("clozes:4011").unwrap_err();
        assert!(
            e.contains("unknown check") && e.contains("CHECK:A,B"),
            "{e}"
        );
        let mut c = ChecksConfig::default();
        c.apply(&["closes:4011".into(), "closes:1006".into(), "lost<5".into()]);
        assert_eq!(c.get("closes").unwrap().allow, vec!["4011", "1006"]);
        assert_eq!(c.get("lost").unwrap().tolerance.as_deref(), Some("<5"));
    }
}
