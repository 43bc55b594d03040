//! How legal variants (`variants.rs`) change what goes on the wire: frame text reshaped
//! (members reordered and spaced, relayed `data` re-serialized), messages fragmented into
//! continuation frames, writes split into tiny chunks. Nothing here runs unless a
//! variant is on: the session checks one flag per frame ([`Wire::plain`]).

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

use super::faults::{Fault, FaultSet};
use super::variants::{Variant, VariantSet};

/// Messages longer than this go out fragmented (the `fragmented` variant), in pieces of
/// this many bytes: odd, so pieces split multi-byte UTF-8 sequences too.
const FRAGMENT_BYTES: usize = 61;

/// The per-frame wire variants of one session, resolved once from the server's set.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wire {
    spaced: bool,
    reserialize_data: bool,
    fragment: bool,
    /// The `binary-acks` fault (FRAME-1), the only fault on this path.
    binary_acks: bool,
}

impl Wire {
    pub fn new(v: VariantSet, f: FaultSet) -> Wire {
        Wire {
            spaced: v.has(Variant::JsonReorderedSpaced),
            reserialize_data: v.has(Variant::DataReserialized),
            fragment: v.has(Variant::Fragmented),
            binary_acks: f.has(Fault::BinaryAcks),
        }
    }

    /// No variant changes frames: write them as queued.
    #[inline]
    pub fn plain(self) -> bool {
        !(self.spaced || self.reserialize_data || self.fragment || self.binary_acks)
    }

    /// The frame as this server writes it: reshaped text, as one or several WebSocket
    /// frames.
    pub fn frames(self, text: Utf8Bytes) -> Vec<Frame> {
        if self.binary_acks && text.starts_with(r#"{"type":"ack""#) {
            return vec![Frame::message(text, OpCode::Data(Data::Binary), true)];
        }
        let text = if self.spaced || self.reserialize_data {
            reshape(&text, self.spaced, self.reserialize_data)
                .map(Utf8Bytes::from)
                .unwrap_or(text)
        } else {
            text
        };
        if !self.fragment || text.len() <= FRAGMENT_BYTES {
            return vec![Frame::message(text, OpCode::Data(Data::Text), true)];
        }
        let bytes = Bytes::from(text);
        let n = bytes.len().div_ceil(FRAGMENT_BYTES);
        (0..n)
            .map(|i| {
                let piece =
                    bytes.slice(i * FRAGMENT_BYTES..((i + 1) * FRAGMENT_BYTES).min(bytes.len()));
                let op = if i == 0 { Data::Text } else { Data::Continue };
                Frame::message(piece, OpCode::Data(op), i + 1 == n)
            })
            .collect()
    }
}

/// Members relayed from clients and tokens: written as they came (JWT-10, MSG-2, PFR-2)
/// by every variant except `data-reserialized`, which re-serializes `data`.
fn relayed(key: &str) -> bool {
    matches!(key, "data" | "metadata" | "fromMetadata")
}

/// Rewrites a server frame: with `spaced`, the members of objects the server wrote itself
/// in reverse order with whitespace between tokens; with `data`, the `data` member as an
/// equal value in other text. `None` if `text` is not a JSON object (it always is).
pub fn reshape(text: &str, spaced: bool, data: bool) -> Option<String> {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    object(text, spaced, data, &mut out)?;
    Some(out)
}

fn object(text: &str, spaced: bool, data: bool, out: &mut String) -> Option<()> {
    let Members(mut members) = serde_json::from_str(text).ok()?;
    if spaced {
        members.reverse();
    }
    out.push_str(if spaced { "{\n\t" } else { "{" });
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push_str(if spaced { " ,\n\t" } else { "," });
        }
        out.push_str(&serde_json::to_string(k).ok()?);
        out.push_str(if spaced { " : " } else { ":" });
        match k.as_str() {
            "data" if data => reserialize(v.get(), out)?,
            k if relayed(k) => out.push_str(v.get()),
            _ => value(v.get(), spaced, data, out)?,
        }
    }
    out.push_str(if spaced { "\n}" } else { "}" });
    Some(())
}

fn value(text: &str, spaced: bool, data: bool, out: &mut String) -> Option<()> {
    match text.as_bytes().first() {
        Some(b'{') => object(text, spaced, data, out),
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            out.push_str(if spaced { "[ " } else { "[" });
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(if spaced { " , " } else { "," });
                }
                value(item.get(), spaced, data, out)?;
            }
            out.push_str(if spaced { " ]" } else { "]" });
            Some(())
        }
        _ => {
            out.push_str(text);
            Some(())
        }
    }
}

/// Writes `text` as an equal JSON value in other text, as a server that parses `data`
/// and serializes it again would: members sorted (the last of duplicates wins, as in
/// serde_json), non-ASCII and `/` escaped, a space after `:` and `,`. Numbers keep their
/// spelling, so their value stays exact.
fn reserialize(text: &str, out: &mut String) -> Option<()> {
    match text.as_bytes().first() {
        Some(b'{') => {
            let Members(members) = serde_json::from_str(text).ok()?;
            let sorted: BTreeMap<String, &RawValue> = members.into_iter().collect();
            out.push('{');
            for (i, (k, v)) in sorted.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                escaped(k, out);
                out.push_str(": ");
                reserialize(v.get(), out)?;
            }
            out.push('}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                reserialize(item.get(), out)?;
            }
            out.push(']');
        }
        Some(b'"') => escaped(&serde_json::from_str::<String>(text).ok()?, out),
        _ => out.push_str(text),
    }
    Some(())
}

/// A JSON string literal with everything outside printable ASCII (and `/`) escaped.
fn escaped(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '/' => out.push_str("\\/"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// An object's members in the order written, values as raw text.
pub(super) struct Members<'a>(pub(super) Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    out.push(entry);
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The `writes-split` variant: a stream whose writes go out 1 to 7 bytes at a time, so
/// with `TCP_NODELAY` a frame (its header too) reaches the client in many segments.
#[derive(Debug)]
pub struct Chunked<S> {
    inner: S,
    writes: usize,
}

impl<S> Chunked<S> {
    pub fn new(inner: S) -> Chunked<S> {
        Chunked { inner, writes: 0 }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Chunked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Chunked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = 1 + self.writes % 7;
        let r = Pin::new(&mut self.inner).poll_write(cx, &buf[..buf.len().min(n)]);
        if r.is_ready() {
            self.writes = self.writes.wrapping_add(1);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const PRESENCE: &str = r#"{"type":"presence","channel":"c","joined":[{"peerId":"a","metadata":{"z":1,"a":"\u00e9"}}],"left":[]}"#;

    #[test]
    fn spaced_reverses_our_members_and_keeps_relayed_text() {
        let out = reshape(PRESENCE, true, false).unwrap();
        assert!(out.starts_with("{\n\t\"left\" : ["), "{out}");
        assert!(
            out.contains(r#""metadata" : {"z":1,"a":"\u00e9"}"#),
            "{out}"
        );
        let a: Value = serde_json::from_str(PRESENCE).unwrap();
        let b: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn data_reserialized_is_an_equal_value_in_other_text() {
        let msg = r#"{"type":"message","channel":"c","from":"f","data":{"z":[1.50,9007199254740993],"a":"é/"},"fromMetadata":{"z":1,"a":2}}"#;
        let out = reshape(msg, false, true).unwrap();
        assert!(
            out.contains(r#""data":{"a": "\u00e9\/", "z": [1.50, 9007199254740993]}"#),
            "{out}"
        );
        assert!(out.contains(r#""fromMetadata":{"z":1,"a":2}"#), "{out}");
        let a: Value = serde_json::from_str(msg).unwrap();
        let b: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(a, b);
        // Astral characters become surrogate pairs.
        let mut s = String::new();
        escaped("😀", &mut s);
        assert_eq!(s, r#""\ud83d\ude00""#);
    }

    #[test]
    fn long_messages_fragment_anywhere() {
        let wire = Wire::new(VariantSet::parse(&["fragmented"]).unwrap(), FaultSet::NONE);
        let text = "é".repeat(100);
        let frames = wire.frames(Utf8Bytes::from(text.clone()));
        assert_eq!(frames.len(), 200usize.div_ceil(FRAGMENT_BYTES));
        let mut joined = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.header().is_final, i + 1 == frames.len());
            let op = if i == 0 { Data::Text } else { Data::Continue };
            assert_eq!(f.header().opcode, OpCode::Data(op));
            joined.extend_from_slice(f.payload());
        }
        assert_eq!(joined, text.as_bytes());
        assert_eq!(wire.frames(Utf8Bytes::from("{}")).len(), 1);
        assert!(Wire::default().plain() && !wire.plain());
    }

    /// Records the size of every write it is given.
    #[derive(Default)]
    struct Sizes(Vec<usize>);

    impl AsyncWrite for Sizes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.push(buf.len());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn split_writes_are_one_to_seven_bytes() {
        use tokio::io::AsyncWriteExt;
        let mut w = Chunked::new(Sizes::default());
        w.write_all(&[b'x'; 100]).await.unwrap();
        let sizes = &w.get_mut().0;
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.iter().all(|n| (1..=7).contains(n)), "{sizes:?}");
        assert_eq!(&sizes[..3], [1, 2, 3]);
    }
}
