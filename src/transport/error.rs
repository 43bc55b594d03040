//! Why a connect failed, in words a user can act on: each failure has a short key for
//! counting ([`ConnectError::kind`]) and, where the user can fix it, advice.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};

/// The phase a connect was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Resolve,
    Tcp,
    Tls,
    Upgrade,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Resolve => "dns",
            Stage::Tcp => "tcp",
            Stage::Tls => "tls",
            Stage::Upgrade => "upgrade",
        })
    }
}

/// Why a connection could not be opened. Clone, so a runner can keep it as a verdict.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    #[error("bad URL {url}: {why}")]
    Url { url: String, why: String },
    #[error("cannot resolve {host}: {why}")]
    Resolve { host: String, why: String },
    #[error("cannot connect to {addr}: {why}")]
    Tcp {
        addr: SocketAddr,
        kind: std::io::ErrorKind,
        why: String,
    },
    #[error("timed out during {stage} after {} ms", after.as_millis())]
    Timeout { stage: Stage, after: Duration },
    #[error("TLS with {host} failed: {cause}")]
    Tls { host: String, cause: TlsFailure },
    #[error("the server answered the upgrade with HTTP {status}{}", if body.is_empty() { String::new() } else { format!(" {body}") })]
    Http { status: u16, body: String },
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
}

/// What went wrong in TLS, as far as the user can act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The chain does not lead to a trusted root.
    UnknownIssuer,
    /// The certificate is not valid for the name we asked for.
    NameMismatch {
        expected: String,
        presented: Vec<String>,
    },
    Expired,
    NotYetValid,
    Revoked,
    /// Another problem with the server's certificate.
    BadCertificate(String),
    /// The server requires a client certificate and got none (or one it refused).
    ClientCertificate(String),
    /// The server ended the handshake with this alert.
    Alert(String),
    /// No TLS version both sides accept.
    ProtocolVersion,
    /// The server's answer was not TLS (e.g. a plain-HTTP port).
    NotTls,
    Other(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::UnknownIssuer => {
                f.write_str("the server's certificate is signed by an unknown issuer")
            }
            TlsFailure::NameMismatch {
                expected,
                presented,
            } if presented.is_empty() => {
                write!(f, "the server's certificate is not valid for {expected}")
            }
            TlsFailure::NameMismatch {
                expected,
                presented,
            } => write!(
                f,
                "the server's certificate is not valid for {expected} (it names {})",
                presented.join(", ")
            ),
            TlsFailure::Expired => f.write_str("the server's certificate has expired"),
            TlsFailure::NotYetValid => f.write_str("the server's certificate is not valid yet"),
            TlsFailure::Revoked => f.write_str("the server's certificate is revoked"),
            TlsFailure::BadCertificate(why) => write!(f, "the server's certificate: {why}"),
            TlsFailure::ClientCertificate(alert) => write!(
                f,
                "the server refused the client certificate (alert {alert})"
            ),
            TlsFailure::Alert(alert) => write!(f, "the server sent the alert {alert}"),
            TlsFailure::ProtocolVersion => {
                f.write_str("no TLS version in common (this client speaks TLS 1.2 and 1.3)")
            }
            TlsFailure::NotTls => f.write_str("the server did not answer in TLS"),
            TlsFailure::Other(why) => f.write_str(why),
        }
    }
}

impl TlsFailure {
    /// Classifies a rustls error.
    pub fn from_rustls(e: &rustls::Error) -> TlsFailure {
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => TlsFailure::UnknownIssuer,
                CertificateError::NotValidForName => TlsFailure::NameMismatch {
                    expected: String::new(),
                    presented: Vec::new(),
                },
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => TlsFailure::NameMismatch {
                    expected: server_name_text(expected),
                    presented: presented.iter().map(|p| presented_name(p)).collect(),
                },
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsFailure::NotYetValid
                }
                CertificateError::Revoked => TlsFailure::Revoked,
                // Path building met a certificate with the issuer's name that did not
                // sign this one (a same-named local certificate, e.g. a snakeoil one):
                // no trusted issuer vouches for it.
                CertificateError::BadSignature
                | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
                | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                    TlsFailure::UnknownIssuer
                }
                other => TlsFailure::BadCertificate(other.to_string()),
            },
            E::AlertReceived(a) => match a {
                AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::AccessDenied => TlsFailure::ClientCertificate(alert_name(*a)),
                AlertDescription::ProtocolVersion => TlsFailure::ProtocolVersion,
                other => TlsFailure::Alert(alert_name(*other)),
            },
            E::PeerIncompatible(p) => match p {
                rustls::PeerIncompatible::ServerDoesNotSupportTls12Or13
                | rustls::PeerIncompatible::Tls12NotOffered
                | rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
                | rustls::PeerIncompatible::Tls13RequiredForQuic
                | rustls::PeerIncompatible::SupportedVersionsExtensionRequired => {
                    TlsFailure::ProtocolVersion
                }
                other => TlsFailure::Other(format!("incompatible server: {other:?}")),
            },
            E::InvalidMessage(_) => TlsFailure::NotTls,
            other => TlsFailure::Other(other.to_string()),
        }
    }

    /// Classifies an I/O error that may wrap a rustls error (tokio-rustls does that).
    pub fn from_io(e: &std::io::Error) -> Option<TlsFailure> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(TlsFailure::from_rustls)
    }

    /// A short key for counting (`tls_unknown_issuer`, …).
    pub fn kind(&self) -> String {
        match self {
            TlsFailure::UnknownIssuer => "tls_unknown_issuer".into(),
            TlsFailure::NameMismatch { .. } => "tls_name_mismatch".into(),
            TlsFailure::Expired => "tls_expired".into(),
            TlsFailure::NotYetValid => "tls_not_yet_valid".into(),
            TlsFailure::Revoked => "tls_revoked".into(),
            TlsFailure::BadCertificate(_) => "tls_bad_certificate".into(),
            TlsFailure::ClientCertificate(_) => "tls_client_certificate".into(),
            TlsFailure::Alert(a) => format!("tls_alert_{a}"),
            TlsFailure::ProtocolVersion => "tls_protocol_version".into(),
            TlsFailure::NotTls => "tls_not_tls".into(),
            TlsFailure::Other(_) => "tls_error".into(),
        }
    }

    /// What to do about it.
    pub fn advice(&self) -> String {
        match self {
            TlsFailure::UnknownIssuer => "the certificate's issuer is not in the trust store (the platform's and Mozilla's roots): pass the issuing CA with --cacert FILE (PEM), or --insecure to skip verification (testing only)".into(),
            TlsFailure::NameMismatch { .. } => "the certificate does not name the host in the URL: use the URL with the name it was issued for (--connect-to HOST:PORT:ADDR:PORT dials another address under that name), or --tls-server-name NAME; --insecure skips verification (testing only)".into(),
            TlsFailure::Expired | TlsFailure::NotYetValid => "the certificate is outside its validity period: renew it on the server, or check this machine's clock; --insecure skips verification (testing only)".into(),
            TlsFailure::Revoked => "the certificate is revoked: the server needs a new one".into(),
            TlsFailure::BadCertificate(_) => "the server's certificate cannot be used; --insecure skips verification (testing only)".into(),
            TlsFailure::ClientCertificate(_) => "the server requires a client certificate (mutual TLS): pass --client-cert FILE --client-key FILE with one its CA accepts".into(),
            TlsFailure::ProtocolVersion => "the server offers no TLS 1.2 or 1.3 (rustls refuses older versions)".into(),
            TlsFailure::NotTls => "the port does not speak TLS: use ws:// or http:// for a plain-text server".into(),
            TlsFailure::Alert(_) | TlsFailure::Other(_) => "the TLS handshake failed: SSLKEYLOGFILE=FILE lets Wireshark decrypt a capture of it".into(),
        }
    }
}

fn alert_name(a: AlertDescription) -> String {
    // `CertificateRequired` → `certificate_required`, as the RFCs name alerts.
    let debug = format!("{a:?}");
    let mut out = String::with_capacity(debug.len() + 4);
    let mut prev_lower = false;
    for c in debug.chars().filter(char::is_ascii_alphanumeric) {
        if c.is_ascii_uppercase() && prev_lower {
            out.push('_');
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// `DnsName("a.example")` → `a.example`, `IpAddress(127.0.0.1)` → `127.0.0.1`: webpki
/// debug-formats the names a certificate presents.
fn presented_name(p: &str) -> String {
    let inner = p
        .strip_prefix("DnsName(")
        .or_else(|| p.strip_prefix("IpAddress("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(p);
    inner.trim_matches('"').to_owned()
}

fn server_name_text(n: &rustls::pki_types::ServerName<'_>) -> String {
    match n {
        rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
        rustls::pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

impl ConnectError {
    /// A short key for counting failures by kind (`tcp_refused`, `http_429`,
    /// `tls_unknown_issuer`, `timeout_tls`, …).
    pub fn kind(&self) -> String {
        match self {
            ConnectError::Url { .. } => "bad_url".into(),
            ConnectError::Resolve { .. } => "dns".into(),
            ConnectError::Tcp { kind, .. } => match kind {
                std::io::ErrorKind::ConnectionRefused => "tcp_refused".into(),
                std::io::ErrorKind::AddrNotAvailable => "tcp_no_source_port".into(),
                _ => "tcp_error".into(),
            },
            ConnectError::Timeout { stage, .. } => format!("timeout_{stage}"),
            ConnectError::Tls { cause, .. } => cause.kind(),
            ConnectError::Http { status, .. } => format!("http_{status}"),
            ConnectError::Handshake(_) => "handshake".into(),
        }
    }

    /// The TLS cause, when TLS failed.
    pub fn tls(&self) -> Option<&TlsFailure> {
        match self {
            ConnectError::Tls { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// What the user can change, for failures they can act on.
    pub fn advice(&self) -> Option<String> {
        match self {
            ConnectError::Tls { cause, .. } => Some(cause.advice()),
            ConnectError::Http { status: 429, .. } => Some(advice_429()),
            ConnectError::Http { status: 503, .. } => Some(
                "HTTP 503 at upgrade: the server is shutting down (SHUT-4); peers retry with backoff"
                    .into(),
            ),
            ConnectError::Tcp { kind: std::io::ErrorKind::ConnectionRefused, addr, .. } => Some(format!(
                "nothing listens at {addr}: is the server running? (e.g. stampede serve --listen {addr} --ip-connect-limit 0)"
            )),
            ConnectError::Tcp { kind: std::io::ErrorKind::AddrNotAvailable, addr, .. } => Some(format!(
                "out of source ports towards {addr}: one source address reaches one server port at most 28,232 times; use more --workers (each gets its own 127.x.y.z source) or more --target servers"
            )),
            ConnectError::Resolve { .. } => Some(
                "check the host name, or map it to an address with --connect-to HOST:PORT:ADDR:PORT".into(),
            ),
            _ => None,
        }
    }
}

/// The advice for HTTP 429 at upgrade (RATE-5).
pub fn advice_429() -> String {
    "HTTP 429 at upgrade: the server limits connection attempts per source IP (RATE-5, by default 60 per minute); \
     disable or raise that limit on the server (stampede serve --ip-connect-limit 0), ramp slower, \
     or spread peers over more source addresses (--workers)"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_read_like_the_rfcs() {
        assert_eq!(
            alert_name(AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(alert_name(AlertDescription::UnknownCA), "unknown_ca");
    }

    #[test]
    fn certificate_problems_are_classified_with_advice() {
        let e = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let f = TlsFailure::from_rustls(&e);
        assert_eq!(f.kind(), "tls_unknown_issuer");
        assert!(f.advice().contains("--cacert"));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(TlsFailure::from_io(&io), Some(TlsFailure::UnknownIssuer));
        let f = TlsFailure::from_rustls(&rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert!(f.advice().contains("--client-cert"), "{f}");
        let f = TlsFailure::from_rustls(&rustls::Error::InvalidCertificate(
            CertificateError::Expired,
        ));
        assert_eq!(f.kind(), "tls_expired");
        let c = ConnectError::Tls {
            host: "h".into(),
            cause: TlsFailure::NameMismatch {
                expected: "h".into(),
                presented: vec!["localhost".into()],
            },
        };
        assert!(c.to_string().contains("it names localhost"), "{c}");
        assert!(c.advice().unwrap().contains("--tls-server-name"));
        assert_eq!(presented_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(presented_name("IpAddress(0::1)"), "0::1");
    }

    #[test]
    fn plain_failures_keep_their_keys() {
        let c = ConnectError::Http {
            status: 429,
            body: String::new(),
        };
        assert_eq!(c.kind(), "http_429");
        assert!(c.advice().unwrap().contains("--ip-connect-limit 0"));
        let t = ConnectError::Timeout {
            stage: Stage::Tls,
            after: Duration::from_secs(1),
        };
        assert_eq!(t.kind(), "timeout_tls");
    }
}
