//! Legal variants (`stampede serve --variant NAME`): behaviours in which a correct server
//! may differ from ours. Faults prove the conformance suite notices a broken server;
//! variants prove it does not fail a correct one that happens to be built differently.
//! The suite must pass against every variant.

use std::fmt;

/// One legal variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Variant {
    /// Like servers built on Node's `ws`: after the close handshake the connection (and
    /// with it the peer's presence) ends only when the client's TCP connection closes.
    LeaveOnTcpClose,
}

impl Variant {
    pub const ALL: &'static [Variant] = &[Variant::LeaveOnTcpClose];

    pub fn name(self) -> &'static str {
        match self {
            Variant::LeaveOnTcpClose => "leave-on-tcp-close",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Variant::LeaveOnTcpClose => {
                "after a client's close frame, the leave is announced only when its TCP connection closes (as servers on Node's ws do; CLOSE-18 allows it)"
            }
        }
    }

    pub fn parse(name: &str) -> Option<Variant> {
        Variant::ALL.iter().copied().find(|v| v.name() == name)
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown variant name.
#[derive(Debug, thiserror::Error)]
#[error("unknown variant `{0}`; `stampede serve --list-variants` prints the known ones")]
pub struct UnknownVariant(pub String);

/// A set of variants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VariantSet(u32);

impl VariantSet {
    pub const NONE: VariantSet = VariantSet(0);

    #[inline]
    pub fn has(self, v: Variant) -> bool {
        self.0 & (1 << v as u8) != 0
    }

    /// Parses variant names (as given to `--variant`).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<VariantSet, UnknownVariant> {
        names.iter().try_fold(VariantSet::NONE, |set, name| {
            let name = name.as_ref().trim();
            Variant::parse(name)
                .map(|v| VariantSet(set.0 | 1 << v as u8))
                .ok_or_else(|| UnknownVariant(name.to_owned()))
        })
    }
}

/// The text `--list-variants` prints.
pub fn listing() -> String {
    let width = Variant::ALL
        .iter()
        .map(|v| v.name().len())
        .max()
        .unwrap_or(0);
    Variant::ALL
        .iter()
        .map(|v| format!("{:width$}  {}\n", v.name(), v.description()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_are_named() {
        for (i, v) in Variant::ALL.iter().enumerate() {
            assert_eq!(Variant::parse(v.name()), Some(*v));
            assert_eq!(*v as usize, i);
        }
        let set = VariantSet::parse(&["leave-on-tcp-close"]).unwrap();
        assert!(set.has(Variant::LeaveOnTcpClose));
        let e = VariantSet::parse(&["nope"]).unwrap_err();
        assert!(e.to_string().contains("`nope`"));
        assert!(listing().contains("leave-on-tcp-close"));
    }
}
