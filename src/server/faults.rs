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
    AckUnrequested = "ack-unrequested" ["FRAME-5", "ACK-1", "SUB-10"]: "requests without requestId are acked with \"requestId\":\"\"",
    SnapshotMissingEmpty = "snapshot-missing-empty" ["PRES-3", "PRES-2", "SUB-5"]: "no snapshot when nobody else is present",
    SnapshotIncludesSelf = "snapshot-includes-self" ["PRES-4"]: "the snapshot lists the subscriber itself",
    SnapshotBeforeAck = "snapshot-before-ack" ["ORD-2", "SUB-5"]: "the snapshot is sent before the ack",
    PresenceNoJoin = "presence-no-join" ["PRES-5"]: "no join deltas",
    PresenceNoLeaveDisconnect = "presence-no-leave-disconnect" ["PRES-6", "CLOSE-18"]: "no leave delta when a connection closes",
    UnsubscribeKeepsDelivering = "unsubscribe-keeps-delivering" ["UNSUB-4"]: "unsubscribe is acked and announced as a leave, but the subscription keeps receiving messages",
    PresenceNoLeaveUnsubscribe = "presence-no-leave-unsubscribe" ["UNSUB-4", "PRES-6"]: "no leave delta on unsubscribe",
    PresencePerConnection = "presence-per-connection" ["PRES-1"]: "joins/leaves announced per connection, not per peer",
    PresenceDropMetadata = "presence-drop-metadata" ["PRES-7", "PFR-2"]: "presence entries omit metadata",
    PresenceNullLeft = "presence-null-left" ["PFR-1", "FRAME-14"]: "deltas carry \"left\":null instead of []",
    MetadataAlways = "metadata-always" ["PUB-6", "SUB-3", "REST-32"]: "fromMetadata stamped without includeSenderMetadata",
    MetadataNever = "metadata-never" ["PUB-6"]: "message frames never carry fromMetadata",
    MetadataReordered = "metadata-reordered" ["MSG-2", "PFR-2", "JWT-10"]: "peerMetadata and metadata are re-serialized with sorted keys and respelled numbers and escapes",
    DirectNoMetadata = "direct-no-metadata" ["SEND-6"]: "direct frames never carry fromMetadata",
    EchoPublisher = "echo-publisher" ["PUB-4"]: "the publisher receives its own message",
    FromSpoofable = "from-spoofable" ["MSG-1", "JWT-5"]: "message.from is taken from data.from when present",
    AcceptBadSignature = "accept-bad-signature" ["AUTH-8", "JWT-4", "CLOSE-9", "CLOSE-16"]: "token signatures are not checked",
    AcceptUnknownKid = "accept-unknown-kid" ["JWT-2", "AUTH-8", "CLOSE-9", "CLOSE-16"]: "an unknown kid is verified with the first key's secret",
    AcceptExpired = "accept-expired" ["AUTH-9", "CLOSE-10", "EXP-2"]: "expired tokens are admitted",
    NoExpiryClose = "no-expiry-close" ["EXP-1", "CLOSE-10"]: "no 4002 close at token expiry during a session",
    IgnoreChannelScope = "ignore-channel-scope" ["AUTHZ-1", "AUTHZ-4", "ERR-5", "SUB-2", "PUB-2", "AUTH-2"]: "out-of-scope channels are allowed",
    IgnorePermissions = "ignore-permissions" ["AUTHZ-5", "AUTHZ-3", "AUTHZ-2", "ERR-10", "SUB-2", "SEND-2"]: "missing actions are allowed",
    AllowReserved = "allow-reserved" ["AUTHZ-7", "SUB-2", "ERR-6", "PUB-2"]: "reserved channel names are allowed",
    NoSizeLimit = "no-size-limit" ["FRAME-9", "LIM-1", "CLOSE-6", "WEL-5"]: "oversized frames are processed, no 1009",
    SizeLimitOffByOne = "size-limit-off-by-one" ["FRAME-9", "WEL-5"]: "a frame of exactly maxMessageSize bytes closes with 1009",
    NoChannelLimit = "no-channel-limit" ["SUB-4", "LIM-3", "ERR-7"]: "a 101st subscription is accepted",
    LongChannelAccepted = "long-channel-accepted" ["SUB-1", "UNSUB-1", "PUB-1", "ERR-3", "LIM-6"]: "channel names over 256 bytes are accepted",
    NoRateLimit = "no-rate-limit" ["RATE-1", "RATE-2", "LIM-14", "CLOSE-13"]: "the per-connection bucket never closes 4011",
    UnknownTypeAsMalformed = "unknown-type-as-malformed" ["FRAME-8", "FRAME-2", "ERR-2", "ERR-15"]: "unknown types answered with malformed_message",
    ErrorDropsRequestId = "error-drops-request-id" ["FRAME-4"]: "error frames never carry requestId",
    PeerNotFoundAcked = "peer-not-found-acked" ["SEND-4", "ERR-8"]: "a send to an offline peer is acked",
    RestNoAuth = "rest-no-auth" ["REST-5", "REST-2", "REST-4"]: "REST accepts any Authorization",
    RestKickWrongCode = "rest-kick-wrong-code" ["REST-41", "CLOSE-15", "CLOSE-1"]: "REST kick closes with 1000 instead of 4020",
    RestPeersPerConnection = "rest-peers-per-connection" ["PRES-11", "REST-22", "REST-21"]: "GET peers lists one entry per connection",
    ReorderPerPublisher = "reorder-per-publisher" ["ORD-5"]: "consecutive messages from one publisher to one subscriber are swapped",
    NoGoingAway = "no-going-away" ["SHUT-1", "GA-1"]: "graceful shutdown closes 1001 without going_away",
    WelcomeMissingExpires = "welcome-missing-expires" ["WEL-3", "AUTH-4"]: "welcome omits expiresAt for publishable keys",
    BackendError = "backend-error" ["ERR-12", "CFG-10"]: "every publish and send fails with backend_error",
    InternalError = "internal-error" ["ERR-13", "CFG-10"]: "every subscribe fails with internal_error",
    Close1011 = "close-1011" ["CLOSE-7", "CFG-10"]: "a connection is closed with 1011 after its first publish",
    Rest503 = "rest-503" ["REST-7", "CFG-10"]: "every REST endpoint answers 503 internal_error",
    AckMissingUnsubscribe = "ack-missing-unsubscribe" ["ACK-1", "UNSUB-2"]: "an unsubscribe with requestId gets no ack",
    AckMissingSend = "ack-missing-send" ["SEND-8"]: "a send with requestId gets no ack",
    PingAcked = "ping-acked" ["PING-1"]: "a ping with requestId gets an ack besides its pong",
    PongDropsRequestId = "pong-drops-request-id" ["PING-2"]: "pongs never echo the ping's requestId",
    PongMissing = "pong-missing" ["PING-1", "PONG-1", "HB-3"]: "application pings are never answered",
    ErrorCloses = "error-closes" ["ERRF-1"]: "every error ends the connection (close 1000, the error frame lost)",
    ErrorCodeGeneric = "error-code-generic" ["ERRF-2", "ERR-1", "ERR-2", "ERR-3", "ERR-4", "ERR-5", "ERR-6", "ERR-7", "ERR-8", "ERR-9", "ERR-10", "ERR-11", "ERR-14", "ERR-16"]: "every error frame carries code bad_request",
    MalformedEchoesBadRequestId = "malformed-echoes-bad-request-id" ["FRAME-6", "LIM-8"]: "a malformed_message for an invalid requestId echoes it",
    MalformedIgnored = "malformed-ignored" ["FRAME-7", "ERR-1"]: "text that is not JSON gets no error",
    UnknownMembersRejected = "unknown-members-rejected" ["FRAME-3"]: "frames with members the server does not know are malformed_message",
    TypeCaseInsensitive = "type-case-insensitive" ["FRAME-2"]: "frame types are matched case-insensitively (\"Subscribe\" works)",
    Utf8Closes1002 = "utf8-closes-1002" ["FRAME-11", "CLOSE-4"]: "invalid UTF-8 closes with 1002 instead of 1007",
    OversizeCloses1002 = "oversize-closes-1002" ["CLOSE-6", "LIM-1"]: "an oversized frame closes with 1002 instead of 1009",
    MissingDataAsNull = "missing-data-as-null" ["PUB-1", "ERR-9"]: "a publish or send without data is relayed with data null",
    NullDataRefused = "null-data-refused" ["PUB-1", "FRAME-16"]: "data null is refused with missing_data",
    DataRounded = "data-rounded" ["FRAME-16"]: "data is parsed into doubles and re-serialized: big integers lose digits",
    WelcomeTwice = "welcome-twice" ["WEL-1", "CONN-8"]: "every connection gets two welcome frames",
    FrameBeforeWelcome = "frame-before-welcome" ["ORD-1", "CONN-8"]: "a pong precedes the welcome",
    WelcomeMaxSizeLies = "welcome-max-size-lies" ["WEL-5"]: "welcome advertises 1000 bytes more than the limit enforced",
    WelcomeEmptyMetadata = "welcome-empty-metadata" ["WEL-7"]: "welcome carries metadata {} when there is none",
    WelcomePeerIdMangled = "welcome-peer-id-mangled" ["WEL-2", "JWT-5", "AUTH-10"]: "welcome.peerId differs from the peerId others see",
    ExpiresAtMs = "expires-at-ms" ["JWT-6"]: "welcome.expiresAt is in milliseconds",
    MetadataLeaks = "metadata-leaks" ["WEL-6"]: "presence entries carry the private metadata claim instead of peerMetadata",
    InvalidPeerIdNotFound = "invalid-peer-id-not-found" ["SEND-1", "ERR-4"]: "an invalid send.to is answered peer_not_found instead of invalid_peer_id",
    RateCloses4099 = "rate-closes-4099" ["CLOSE-13", "CLOSE-17"]: "the rate limit closes with 4099 instead of 4011",
    DirectCarriesTo = "direct-carries-to" ["DIR-1"]: "direct frames carry a to member",
    PresenceWithoutAction = "presence-without-action" ["AUTHZ-6"]: "connections without the presence action get presence frames",
    PresenceSampled = "presence-sampled" ["PRES-12"]: "each presence delta reaches only one of the channel's subscribers",
    WildcardGetsPresence = "wildcard-gets-presence" ["PRES-13"]: "wildcard subscribers get join deltas of the channels they match",
    ResubscribeAnnounces = "resubscribe-announces" ["SUB-8"]: "a repeated subscribe announces the peer again",
    ResubscribeNoSnapshot = "resubscribe-no-snapshot" ["SUB-8"]: "a repeated subscribe gets no snapshot",
    ResubscribeCounts = "resubscribe-counts" ["SUB-7"]: "a repeated subscribe counts toward the 100-subscription limit",
    SelfJoinBeforeSnapshot = "self-join-before-snapshot" ["ORD-3"]: "the subscriber gets its own join delta before the snapshot",
    SubscriptionLate = "subscription-late" ["SUB-6", "ORD-6"]: "a subscription takes effect 300 ms after its ack",
    SubscribeNeedsExistingChannel = "subscribe-needs-existing-channel" ["SUB-9"]: "subscribing to a channel nobody holds fails with channel_not_authorized",
    UnsubscribeChecksScope = "unsubscribe-checks-scope" ["UNSUB-3"]: "unsubscribe applies the reserved-name, action and scope checks",
    SamePeerExcluded = "same-peer-excluded" ["PUB-5"]: "a publish skips every connection of the publisher's peerId",
    PublishNeedsSubscription = "publish-needs-subscription" ["PUB-3"]: "publishing to a channel the connection does not hold fails with channel_not_authorized",
    PublishToEmptyUnacked = "publish-to-empty-unacked" ["PUB-8"]: "a publish nobody receives is not acked",
    SendNeedsSharedChannel = "send-needs-shared-channel" ["SEND-3"]: "a send to a peer sharing no channel with the sender is peer_not_found",
    DirectFirstConnectionOnly = "direct-first-connection-only" ["SEND-5"]: "a direct reaches only one connection of the target peer",
    CrossAppRouting = "cross-app-routing" ["AUTHZ-9"]: "a publish also reaches subscribers of the same channel name in other apps",
    ErrorsUncorrelatedDropped = "errors-uncorrelated-dropped" ["ERRF-3", "FRAME-5"]: "errors for requests without requestId are not sent",
    UnauthorizedSubscribeCloses4003 = "unauthorized-subscribe-closes-4003" ["CLOSE-11", "AUTHZ-4"]: "an out-of-scope subscribe closes with 4003 (the CFG-9 compatibility mode forced on)",
    GoingAwayZeroRetry = "going-away-zero-retry" ["GA-2"]: "going_away carries retryAfterMs 0",
    FramesAfterGoingAway = "frames-after-going-away" ["ORD-9"]: "a pong follows going_away before the close",
    GoingAwayCloses1000 = "going-away-closes-1000" ["CLOSE-2"]: "graceful shutdown closes with 1000 after going_away",
    AcceptOtherAlg = "accept-other-alg" ["JWT-1"]: "HS384 and HS512 tokens are admitted",
    AcceptNoExp = "accept-no-exp" ["JWT-7"]: "a token without exp is admitted (for an hour)",
    AcceptBigPeerMetadata = "accept-big-peer-metadata" ["JWT-8", "LIM-4"]: "peerMetadata over 4096 bytes is admitted",
    AcceptBigMetadata = "accept-big-metadata" ["JWT-9", "LIM-5"]: "metadata over 8192 bytes is admitted",
    AcceptBadClaimTypes = "accept-bad-claim-types" ["JWT-13"]: "channels or permissions of the wrong type are ignored instead of refused",
    RestMintNoLimits = "rest-mint-no-limits" ["REST-13", "LIM-9", "LIM-10", "LIM-11"]: "POST /v1/tokens accepts any number of channels and permissions and any expiresInSec",
    PublishablePeerIdFixed = "publishable-peer-id-fixed" ["AUTH-3"]: "every publishable-key connection gets the same peerId",
    PublishableUnknownAccepted = "publishable-unknown-accepted" ["AUTH-1"]: "an unknown publishable key is admitted as the first configured one",
    TokenAndKeyAccepted = "token-and-key-accepted" ["CONN-3"]: "a query with both token and key is admitted with the token",
    AccountCheckedFirst = "account-checked-first" ["CONN-6"]: "a suspended app closes 4012 before the credential is verified",
    WelcomeBeforeRefusal = "welcome-before-refusal" ["CONN-7"]: "refused connections get a welcome before their close",
    SuspendedAdmitted = "suspended-admitted" ["AUTH-11", "CLOSE-14"]: "new connections of a suspended app are admitted",
    ConcurrencyLimitOff = "concurrency-limit-off" ["AUTH-12", "QUOTA-6", "CLOSE-12"]: "maxConcurrentConnections is not enforced",
    IpLimitOff = "ip-limit-off" ["AUTH-13", "RATE-5", "LIM-15"]: "connection attempts per source IP are not limited",
    CredentialNotDecoded = "credential-not-decoded" ["CONN-2"]: "the token or key in the query string is not percent-decoded",
    AppPings = "app-pings" ["HB-4"]: "the server sends an application ping after welcome",
    KeepalivePong = "keepalive-pong" ["HB-5", "PONG-1"]: "the server sends an unsolicited pong after welcome",
    PublishableExpires = "publishable-expires" ["EXP-4"]: "publishable-key connections are closed with 4002 after 1 s",
    ExpiryGoingAway = "expiry-going-away" ["EXP-3"]: "going_away precedes the 4002 close",
    BinaryAcks = "binary-acks" ["FRAME-1"]: "acks are sent as binary frames",
    RateErrorFrame = "rate-error-frame" ["RATE-3"]: "an empty token bucket answers each frame with an error over_message_rate instead of closing 4011",
    RateBucketHalf = "rate-bucket-half" ["RATE-4"]: "a new connection's bucket starts half full",
    ControlCharsInChannel = "control-chars-in-channel" ["LIM-17"]: "channel names with control characters are accepted",
    ChannelLengthInChars = "channel-length-in-chars" ["LIM-18"]: "channel names are limited to 256 characters, not bytes",
    OutboundLimited = "outbound-limited" ["LIM-2"]: "frames larger than maxMessageSize are not sent",
    QuotaIgnored = "quota-ignored" ["QUOTA-2", "ERR-11"]: "the message quota is never enforced",
    OveragesRefused = "overages-refused" ["QUOTA-3"]: "messages beyond the plan are refused even when overages are usable",
    PublishCountsRecipients = "publish-counts-recipients" ["PUB-7"]: "a publish counts one message per recipient",
    SendNotCounted = "send-not-counted" ["SEND-7"]: "sends are not counted toward the quota",
    PingCountsQuota = "ping-counts-quota" ["PING-3"]: "pings are counted toward the message quota",
    QuotaCountsDeliveredOnly = "quota-counts-delivered-only" ["QUOTA-4"]: "a send that finds no peer is not counted",
    ConcurrentNotReleased = "concurrent-not-released" ["QUOTA-7"]: "closed connections keep counting in concurrentNow",
    OverQuotaStopsDelivery = "over-quota-stops-delivery" ["QUOTA-5", "PRES-10"]: "once a publish or send is refused over quota, the app delivers nothing more (messages, directs, presence)",
    SnapshotLate = "snapshot-late" ["ORD-4"]: "the presence snapshot is queued 200 ms after the ack, behind messages",
    LeaveWithoutMetadata = "leave-without-metadata" ["PRES-9", "PRES-7"]: "leave deltas carry no metadata",
    SubscriptionsRestored = "subscriptions-restored" ["SUB-11"]: "a peer reconnecting gets its previous connection's subscriptions back",
    EndpointMoved = "endpoint-moved" ["CONN-1"]: "the WebSocket endpoint is /ws; an upgrade at /v1 gets 404",
    SubprotocolForced = "subprotocol-forced" ["CONN-4"]: "the upgrade answers with a subprotocol nobody asked for",
    LongPeerIdsAccepted = "long-peer-ids-accepted" ["LIM-7"]: "REST mint accepts peerIds up to 256 bytes",
    PatternCaseInsensitive = "pattern-case-insensitive" ["PAT-1"]: "key and token patterns match channel names ignoring case",
    PatternStarCrossesSlash = "pattern-star-crosses-slash" ["PAT-2"]: "a single * in a pattern matches across /",
    PatternDoubleStarStopsAtSlash = "pattern-double-star-stops-at-slash" ["PAT-3"]: "** in a pattern does not match across /",
    PatternNoEscape = "pattern-no-escape" ["PAT-4"]: "a backslash in a pattern escapes nothing",
    PatternUnanchored = "pattern-unanchored" ["PAT-5"]: "a pattern matches any channel name it is a prefix of",
    PatternStarRuns = "pattern-star-runs" ["PAT-6"]: "a run of three or more * reads as a single *",
    RestErrorBodyCode = "rest-error-body-code" ["REST-6"]: "REST errors are {\"code\",\"message\"} instead of {\"error\",\"message\"}",
    RestCrossApp = "rest-cross-app" ["REST-9"]: "REST peers, publish and kick act on every app, not only the key's",
    RestNoPercentDecode = "rest-no-percent-decode" ["REST-11"]: "REST path parameters are not percent-decoded",
    RestTokenExpiresMs = "rest-token-expires-ms" ["REST-12"]: "POST /v1/tokens answers expiresAt in milliseconds",
    RestMintHs384 = "rest-mint-hs384" ["REST-14", "AUTH-7"]: "POST /v1/tokens signs with HS384",
    RestIgnoresKeyScope = "rest-ignores-key-scope" ["REST-8", "REST-20", "REST-30"]: "REST peers and publish skip the key's actions and patterns",
    RestPublishOneRecipient = "rest-publish-one-recipient" ["REST-31"]: "a REST publish reaches only one subscriber",
    RestDeliveredZero = "rest-delivered-zero" ["REST-33"]: "a REST publish answers delivered 0",
    RestFromIgnored = "rest-from-ignored" ["REST-34"]: "a REST publish is always from system",
    RestPublishNoQuota = "rest-publish-no-quota" ["REST-35"]: "REST publishes are neither counted nor limited by the quota",
    RestPublishSubscribes = "rest-publish-subscribes" ["REST-36"]: "a REST publish makes its from present in the channel",
    RestKickNeedsPublish = "rest-kick-needs-publish" ["REST-40"]: "DELETE /v1/peers/:id needs the publish action",
    RestKick404 = "rest-kick-404" ["REST-42"]: "kicking an offline peer answers 404",
    RestKickNoValidation = "rest-kick-no-validation" ["REST-43"]: "DELETE /v1/peers/:id accepts invalid ids",
    RestKickRevokes = "rest-kick-revokes" ["REST-44"]: "a kicked peerId can no longer connect",
    RestUsageFrozen = "rest-usage-frozen" ["REST-50"]: "GET /v1/usage always reports 0 messages used",
    RestTokensMissing = "rest-tokens-missing" ["REST-1"]: "POST /v1/tokens does not exist (404)",
    Rest201 = "rest-201" ["REST-10"]: "successful REST POSTs answer 201 instead of 200",
    RestBodyUnlimited = "rest-body-unlimited" ["LIM-12"]: "REST bodies over 32 KB are accepted",
    RestUsageAuth500 = "rest-usage-auth-500" ["REST-52"]: "GET /v1/usage answers bad credentials with 500 instead of 401",
    ErrorFrameBeforeAuthClose = "error-frame-before-auth-close" ["ERRF-4"]: "an invalid_token / token_expired / account_suspended error frame precedes the 4001 / 4002 / 4012 close",
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
