//! Fault switches (`stampede serve --fault NAME`): each one breaks exactly one SPEC
//! behaviour, named with the rules it violates, so the conformance suite can prove it
//! notices. The clean server is unaffected; a set of switches is a bitmask checked on the
//! hot path with one AND.

use std::fmt;

macro_rules! faults {
    ($($variant:ident = $name:literal [$($rule:literal),*] : $desc:literal,)*) => {
        /// One fault switch.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Fault { $($variant,)* }

        impl Fault {
            /// Every switch, in the order `--list-faults` prints them.
            pub const ALL: &'static [Fault] = &[$(Fault::$variant,)*];

            /// The name used on the command line, e.g. `ack-missing-publish`.
            pub fn name(self) -> &'static str {
                match self { $(Fault::$variant => $name,)* }
            }

            /// What the switch breaks.
            pub fn description(self) -> &'static str {
                match self { $(Fault::$variant => $desc,)* }
            }

            /// The SPEC rules the switch breaks: the conformance cases citing them are the
            /// ones expected to kill it (`stampede conform --coverage` shows the pairs).
            pub fn rules(self) -> &'static [&'static str] {
                match self { $(Fault::$variant => &[$($rule),*],)* }
            }
        }
    };
}

faults! {
    AckMissingSubscribe = "ack-missing-subscribe" ["ACK-1", "SUB-5"]: "a subscribe with requestId gets no ack",
    AckMissingPublish = "ack-missing-publish" ["ACK-1", "PUB-4"]: "a publish with requestId gets no ack",
    AckWrongRequestId = "ack-wrong-request-id" ["FRAME-4", "ACK-1"]: "acks echo a different requestId",
    AckUnrequested = "ack-unrequested" ["FRAME-5", "ACK-1"]: "requests without requestId are acked with \"requestId\":\"\"",
    SnapshotMissingEmpty = "snapshot-missing-empty" ["PRES-3"]: "no snapshot when nobody else is present",
    SnapshotIncludesSelf = "snapshot-includes-self" ["PRES-4"]: "the snapshot lists the subscriber itself",
    SnapshotBeforeAck = "snapshot-before-ack" ["ORD-2"]: "the snapshot is sent before the ack",
    PresenceNoJoin = "presence-no-join" ["PRES-5"]: "no join deltas",
    PresenceNoLeaveDisconnect = "presence-no-leave-disconnect" ["PRES-6"]: "no leave delta when a connection closes",
    UnsubscribeKeepsDelivering = "unsubscribe-keeps-delivering" ["UNSUB-4"]: "unsubscribe is acked and announced as a leave, but the subscription keeps receiving messages",
    PresenceNoLeaveUnsubscribe = "presence-no-leave-unsubscribe" ["UNSUB-4", "PRES-6"]: "no leave delta on unsubscribe",
    PresencePerConnection = "presence-per-connection" ["PRES-1"]: "joins/leaves announced per connection, not per peer",
    PresenceDropMetadata = "presence-drop-metadata" ["PRES-7", "PFR-2"]: "presence entries omit metadata",
    PresenceNullLeft = "presence-null-left" ["PFR-1", "FRAME-14"]: "deltas carry \"left\":null instead of []",
    MetadataAlways = "metadata-always" ["PUB-6"]: "fromMetadata stamped without includeSenderMetadata",
    MetadataNever = "metadata-never" ["PUB-6"]: "message frames never carry fromMetadata",
    MetadataReordered = "metadata-reordered" ["MSG-2", "PFR-2", "JWT-10"]: "peerMetadata and metadata are re-serialized with sorted keys and respelled numbers and escapes",
    DirectNoMetadata = "direct-no-metadata" ["SEND-6"]: "direct frames never carry fromMetadata",
    EchoPublisher = "echo-publisher" ["PUB-4"]: "the publisher receives its own message",
    FromSpoofable = "from-spoofable" ["MSG-1"]: "message.from is taken from data.from when present",
    AcceptBadSignature = "accept-bad-signature" ["AUTH-8", "JWT-4"]: "token signatures are not checked",
    AcceptUnknownKid = "accept-unknown-kid" ["JWT-2"]: "an unknown kid is verified with the first key's secret",
    AcceptExpired = "accept-expired" ["AUTH-9"]: "expired tokens are admitted",
    NoExpiryClose = "no-expiry-close" ["EXP-1"]: "no 4002 close at token expiry during a session",
    IgnoreChannelScope = "ignore-channel-scope" ["AUTHZ-1", "AUTHZ-4"]: "out-of-scope channels are allowed",
    IgnorePermissions = "ignore-permissions" ["AUTHZ-5"]: "missing actions are allowed",
    AllowReserved = "allow-reserved" ["AUTHZ-7"]: "reserved channel names are allowed",
    NoSizeLimit = "no-size-limit" ["FRAME-9"]: "oversized frames are processed, no 1009",
    SizeLimitOffByOne = "size-limit-off-by-one" ["FRAME-9"]: "a frame of exactly maxMessageSize bytes closes with 1009",
    NoChannelLimit = "no-channel-limit" ["SUB-4"]: "a 101st subscription is accepted",
    LongChannelAccepted = "long-channel-accepted" ["SUB-1"]: "channel names over 256 bytes are accepted",
    NoRateLimit = "no-rate-limit" ["RATE-1"]: "the per-connection bucket never closes 4011",
    UnknownTypeAsMalformed = "unknown-type-as-malformed" ["FRAME-8"]: "unknown types answered with malformed_message",
    ErrorDropsRequestId = "error-drops-request-id" ["FRAME-4"]: "error frames never carry requestId",
    PeerNotFoundAcked = "peer-not-found-acked" ["SEND-4"]: "a send to an offline peer is acked",
    RestNoAuth = "rest-no-auth" ["REST-5"]: "REST accepts any Authorization",
    RestKickWrongCode = "rest-kick-wrong-code" ["REST-41"]: "REST kick closes with 1000 instead of 4020",
    RestPeersPerConnection = "rest-peers-per-connection" ["PRES-11", "REST-22"]: "GET peers lists one entry per connection",
    ReorderPerPublisher = "reorder-per-publisher" ["ORD-5"]: "consecutive messages from one publisher to one subscriber are swapped",
    NoGoingAway = "no-going-away" ["SHUT-1"]: "graceful shutdown closes 1001 without going_away",
    WelcomeMissingExpires = "welcome-missing-expires" ["WEL-3"]: "welcome omits expiresAt for publishable keys",
    BackendError = "backend-error" ["ERR-12", "CFG-10"]: "every publish and send fails with backend_error",
    InternalError = "internal-error" ["ERR-13", "CFG-10"]: "every subscribe fails with internal_error",
    Close1011 = "close-1011" ["CLOSE-7", "CFG-10"]: "a connection is closed with 1011 after its first publish",
    Rest503 = "rest-503" ["REST-7", "CFG-10"]: "every REST endpoint answers 503 internal_error",
}

impl Fault {
    /// Looks a switch up by its command-line name.
    pub fn parse(name: &str) -> Option<Fault> {
        Fault::ALL.iter().copied().find(|f| f.name() == name)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown fault name, with the list of known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown fault `{0}`; `stampede serve --list-faults` prints the known ones")]
pub struct UnknownFault(pub String);

/// Words in a [`FaultSet`]: room for 256 switches.
const WORDS: usize = 4;

/// A set of fault switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultSet([u64; WORDS]);

impl FaultSet {
    pub const NONE: FaultSet = FaultSet([0; WORDS]);

    pub fn with(mut self, f: Fault) -> FaultSet {
        let i = f as usize;
        self.0[i / 64] |= 1 << (i % 64);
        self
    }

    /// Whether switch `f` is on.
    #[inline]
    pub fn has(self, f: Fault) -> bool {
        let i = f as usize;
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    pub fn is_empty(self) -> bool {
        self == FaultSet::NONE
    }

    /// Parses switch names (as given to `--fault`).
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<FaultSet, UnknownFault> {
        names.iter().try_fold(FaultSet::NONE, |set, name| {
            let name = name.as_ref().trim();
            Fault::parse(name)
                .map(|f| set.with(f))
                .ok_or_else(|| UnknownFault(name.to_owned()))
        })
    }

    pub fn iter(self) -> impl Iterator<Item = Fault> {
        Fault::ALL.iter().copied().filter(move |f| self.has(*f))
    }
}

/// The text `--list-faults` prints: one `name  description` line per switch.
pub fn listing() -> String {
    let width = Fault::ALL.iter().map(|f| f.name().len()).max().unwrap_or(0);
    Fault::ALL
        .iter()
        .map(|f| {
            format!(
                "{:width$}  {} ({})\n",
                f.name(),
                f.description(),
                f.rules().join(", ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_the_mask() {
        assert!(Fault::ALL.len() <= 64 * WORDS);
        for (i, f) in Fault::ALL.iter().enumerate() {
            assert_eq!(Fault::parse(f.name()), Some(*f));
            assert_eq!(*f as usize, i);
        }
    }

    #[test]
    fn parse_sets() {
        let set = FaultSet::parse(&["echo-publisher", "no-going-away"]).unwrap();
        assert!(set.has(Fault::EchoPublisher) && set.has(Fault::NoGoingAway));
        assert!(!set.has(Fault::AckMissingPublish));
        assert_eq!(set.iter().count(), 2);
        let err = FaultSet::parse(&["nope"]).unwrap_err();
        assert!(err.to_string().contains("`nope`"));
        assert!(listing().contains("welcome-missing-expires"));
        for f in Fault::ALL {
            assert!(!f.rules().is_empty(), "{f} names no rule");
        }
    }
}
