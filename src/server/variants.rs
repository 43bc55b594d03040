//! Legal variants (`stampede serve --variant NAME`): behaviours in which a correct server
//! may differ from ours. Faults prove the conformance suite notices a broken server;
//! variants prove it does not fail a correct one that happens to be built differently.
//! The suite must pass against every variant.

use std::fmt;

macro_rules! variants {
    ($($variant:ident = $name:literal [$($departs:literal),*] : $desc:literal,)*) => {
        /// One legal variant.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Variant { $($variant,)* }

        impl Variant {
            /// Every variant, in the order `--list-variants` prints them.
            pub const ALL: &'static [Variant] = &[$(Variant::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Variant::$variant => $name,)* }
            }

            /// What differs, and why SPEC allows it.
            pub fn description(self) -> &'static str {
                match self { $(Variant::$variant => $desc,)* }
            }

            /// The `[choice]` rules of SPEC this variant departs from: a correct server
            /// may choose otherwise, so cases resting on them (tagged `choice` and citing
            /// one of them) do not apply to it.
            pub fn departs_from(self) -> &'static [&'static str] {
                match self { $(Variant::$variant => &[$($departs),*],)* }
            }
        }
    };
}

variants! {
    LeaveOnTcpClose = "leave-on-tcp-close" []:
        "after a client's close frame, the leave is announced only when its TCP connection closes (as servers on Node's ws do; CLOSE-18 allows it)",
    JsonReorderedSpaced = "json-reordered-spaced" []:
        "frames the server writes itself list their members in reverse order with whitespace between tokens (JSON objects are unordered, RFC 8259; relayed values stay verbatim)",
    DataReserialized = "data-reserialized" ["FRAME-16"]:
        "relayed data is re-serialized: an equal JSON value as other text (members sorted, non-ASCII escaped, spaces); departs from FRAME-16's byte-for-byte [choice] only",
    WritesCoalesced = "writes-coalesced" []:
        "frames are held up to 25 ms and written together, several frames in one TCP write",
    WritesSplit = "writes-split" []:
        "every write goes out in chunks of 1-7 bytes, so frames (and their headers) arrive split across many TCP segments",
    Fragmented = "fragmented" []:
        "text messages over 61 bytes are sent as fragmented WebSocket messages (pieces of 61 bytes in continuation frames, split anywhere, even inside a UTF-8 sequence; RFC 6455 5.4)",
    DelayedFrames = "delayed-frames" []:
        "every frame is written a random 0-50 ms after it was queued, each connection's order kept",
    PingsFrequent = "pings-frequent" []:
        "control Pings every 200 ms instead of 30 s (HB-1 is a SHOULD; HB-2's 10 s grace unchanged)",
    CloseLate = "close-late" []:
        "a client's close frame is answered (and the connection ended) 900 ms late, inside the client's 1 s wait (CLOSE-18)",
}

impl Variant {
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

/// A set of variants, checked on the hot path with one AND (like `FaultSet`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VariantSet(u32);

impl VariantSet {
    pub const NONE: VariantSet = VariantSet(0);

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

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
        assert!(Variant::ALL.len() <= 32);
        assert_eq!(Variant::DataReserialized.departs_from(), ["FRAME-16"]);
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
