//! Fault switches (`stampede serve --fault NAME`): each one breaks exactly one SPEC
//! behaviour, so the conformance suite can prove it notices. The clean server is
//! unaffected; a set of switches is a bitmask checked on the hot path with one AND.

use std::fmt;

macro_rules! faults {
    ($($variant:ident = $name:literal : $desc:literal,)*) => {
        /// One fault switch.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Fault { $($variant,)* }

        impl Fault {
            /// Every switch, in the order `--list-faults` prints them.
            pub const ALL: &'static [Fault] = &[$(Fault::$variant,)*];

            /// The name used on the command line, e.g. `ack-missing-publish`.
            pub fn name(self) -> &'static str {
                match self { $(Fault::$variant => $name,)* }
            }

            /// What the switch breaks, with the SPEC rule it violates.
            pub fn description(self) -> &'static str {
                match self { $(Fault::$variant => $desc,)* }
            }
        }
    };
}

faults! {
    AckMissingSubscribe = "ack-missing-subscribe": "a subscribe with requestId gets no ack (ACK-1)",
    AckMissingPublish = "ack-missing-publish": "a publish with requestId gets no ack (ACK-1)",
    AckWrongRequestId = "ack-wrong-request-id": "acks echo a different requestId (FRAME-4)",
    AckUnrequested = "ack-unrequested": "requests without requestId are acked with \"requestId\":\"\" (FRAME-5)",
    SnapshotMissingEmpty = "snapshot-missing-empty": "no snapshot when nobody else is present (PRES-3)",
    SnapshotIncludesSelf = "snapshot-includes-self": "the snapshot lists the subscriber itself (PRES-4)",
    SnapshotBeforeAck = "snapshot-before-ack": "the snapshot is sent before the ack (ORD-2)",
    PresenceNoJoin = "presence-no-join": "no join deltas (PRES-5)",
    PresenceNoLeaveDisconnect = "presence-no-leave-disconnect": "no leave delta when a connection closes (PRES-6)",
    UnsubscribeKeepsDelivering = "unsubscribe-keeps-delivering": "unsubscribe is acked and announced as a leave, but the subscription keeps receiving messages (UNSUB-4)",
    PresenceNoLeaveUnsubscribe = "presence-no-leave-unsubscribe": "no leave delta on unsubscribe (UNSUB-4)",
    PresencePerConnection = "presence-per-connection": "joins/leaves announced per connection, not per peer (PRES-1)",
    PresenceDropMetadata = "presence-drop-metadata": "presence entries omit metadata (PRES-7, PFR-2)",
    PresenceNullLeft = "presence-null-left": "deltas carry \"left\":null instead of [] (PFR-1)",
    MetadataAlways = "metadata-always": "fromMetadata stamped without includeSenderMetadata (PUB-6)",
    MetadataNever = "metadata-never": "message frames never carry fromMetadata (PUB-6)",
    MetadataReordered = "metadata-reordered": "peerMetadata and metadata are re-serialized with sorted keys and respelled numbers and escapes (MSG-2, PFR-2, JWT-10)",
    DirectNoMetadata = "direct-no-metadata": "direct frames never carry fromMetadata (SEND-6)",
    EchoPublisher = "echo-publisher": "the publisher receives its own message (PUB-4)",
    FromSpoofable = "from-spoofable": "message.from is taken from data.from when present (MSG-1)",
    AcceptBadSignature = "accept-bad-signature": "token signatures are not checked (AUTH-8, JWT-4)",
    AcceptUnknownKid = "accept-unknown-kid": "an unknown kid is verified with the first key's secret (JWT-2)",
    AcceptExpired = "accept-expired": "expired tokens are admitted (AUTH-9)",
    NoExpiryClose = "no-expiry-close": "no 4002 close at token expiry during a session (EXP-1)",
    IgnoreChannelScope = "ignore-channel-scope": "out-of-scope channels are allowed (AUTHZ-1/4)",
    IgnorePermissions = "ignore-permissions": "missing actions are allowed (AUTHZ-5)",
    AllowReserved = "allow-reserved": "reserved channel names are allowed (AUTHZ-7)",
    NoSizeLimit = "no-size-limit": "oversized frames are processed, no 1009 (FRAME-9)",
    SizeLimitOffByOne = "size-limit-off-by-one": "a frame of exactly maxMessageSize bytes closes with 1009 (FRAME-9)",
    NoChannelLimit = "no-channel-limit": "a 101st subscription is accepted (SUB-4)",
    LongChannelAccepted = "long-channel-accepted": "channel names over 256 bytes are accepted (SUB-1)",
    NoRateLimit = "no-rate-limit": "the per-connection bucket never closes 4011 (RATE-1)",
    UnknownTypeAsMalformed = "unknown-type-as-malformed": "unknown types answered with malformed_message (FRAME-8)",
    ErrorDropsRequestId = "error-drops-request-id": "error frames never carry requestId (FRAME-4)",
    PeerNotFoundAcked = "peer-not-found-acked": "a send to an offline peer is acked (SEND-4)",
    RestNoAuth = "rest-no-auth": "REST accepts any Authorization (REST-5)",
    RestKickWrongCode = "rest-kick-wrong-code": "REST kick closes with 1000 instead of 4020 (REST-41)",
    RestPeersPerConnection = "rest-peers-per-connection": "GET peers lists one entry per connection (PRES-11, REST-22)",
    ReorderPerPublisher = "reorder-per-publisher": "consecutive messages from one publisher to one subscriber are swapped (ORD-5)",
    NoGoingAway = "no-going-away": "graceful shutdown closes 1001 without going_away (SHUT-1)",
    WelcomeMissingExpires = "welcome-missing-expires": "welcome omits expiresAt for publishable keys (WEL-3)",
    BackendError = "backend-error": "every publish and send fails with backend_error (ERR-12, CFG-10)",
    InternalError = "internal-error": "every subscribe fails with internal_error (ERR-13, CFG-10)",
    Close1011 = "close-1011": "a connection is closed with 1011 after its first publish (CLOSE-7, CFG-10)",
    Rest503 = "rest-503": "every REST endpoint answers 503 internal_error (REST-7, CFG-10)",
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

/// A set of fault switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultSet(u64);

impl FaultSet {
    pub const NONE: FaultSet = FaultSet(0);

    pub fn with(self, f: Fault) -> FaultSet {
        FaultSet(self.0 | 1 << f as u8)
    }

    /// Whether switch `f` is on.
    #[inline]
    pub fn has(self, f: Fault) -> bool {
        self.0 & (1 << f as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
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
        .map(|f| format!("{:width$}  {}\n", f.name(), f.description()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_fit_the_mask() {
        assert!(Fault::ALL.len() <= 64);
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
    }
}
