//! TLS for every client of the harness: rustls with the aws-lc-rs provider chosen
//! explicitly (a process-wide default would panic at the first handshake when none is
//! installed, LIMITS.md), trust (platform roots + Mozilla's + `--cacert`), `--insecure`,
//! client certificates, the server name, session resumption and `SSLKEYLOGFILE`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, ValueEnum};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, HandshakeKind, RootCertStore, SignatureScheme};

use super::endpoint::ConnectTo;

/// How reconnects reuse TLS sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResumptionMode {
    /// Every connect is a full handshake, as with a fresh client.
    #[default]
    Off,
    /// Each peer keeps its own session cache: its reconnects resume, like a browser tab.
    PerPeer,
    /// One cache for every peer: most connects resume, which makes a server look
    /// cheaper than a fleet of real clients would.
    Shared,
}

/// TLS and connection flags shared by every command that connects.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Also trust the CA certificates in FILE (PEM) for wss:// and https:// targets, on
    /// top of the platform's roots and Mozilla's. Repeatable.
    #[arg(long = "cacert", value_name = "FILE")]
    pub cacert: Vec<PathBuf>,
    /// Do not verify server certificates (testing only; the report records it).
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// Client certificate chain (PEM) for servers that require mutual TLS.
    #[arg(long, value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// Private key (PEM) of --client-cert.
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
    /// Dial ADDR:PORT for connections to HOST:PORT, as curl does: the URL's host stays
    /// the TLS server name, the certificate name and the Host header. Empty fields match
    /// any (HOST, PORT) or keep the original (ADDR, PORT). Repeatable.
    #[arg(long = "connect-to", value_name = "HOST:PORT:ADDR:PORT", value_parser = ConnectTo::parse)]
    pub connect_to: Vec<ConnectTo>,
    /// Name to send in SNI and to verify the certificate against, instead of the URL's host.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// TLS session resumption: `off` (default) makes every connect a full handshake, as
    /// a fleet of fresh clients would; `per-peer` lets each peer's reconnects resume,
    /// like a browser tab; `shared` gives all peers one cache, so most connects resume
    /// and the server looks cheaper than real clients make it.
    #[arg(long, value_enum, default_value_t = ResumptionMode::Off, value_name = "MODE")]
    pub tls_resumption: ResumptionMode,
}

impl TlsArgs {
    /// These flags as command-line arguments (for worker processes).
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for f in &self.cacert {
            a.extend(["--cacert".into(), f.display().to_string()]);
        }
        if self.insecure {
            a.push("--insecure".into());
        }
        if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
            a.extend(["--client-cert".into(), c.display().to_string()]);
            a.extend(["--client-key".into(), k.display().to_string()]);
        }
        for r in &self.connect_to {
            a.extend(["--connect-to".into(), r.to_string()]);
        }
        if let Some(n) = &self.tls_server_name {
            a.extend(["--tls-server-name".into(), n.clone()]);
        }
        if self.tls_resumption != ResumptionMode::Off {
            let mode = self
                .tls_resumption
                .to_possible_value()
                .map(|v| v.get_name().to_owned())
                .unwrap_or_default();
            a.extend(["--tls-resumption".into(), mode]);
        }
        a
    }
}

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read {}: {why}", path.display())]
    Read { path: PathBuf, why: String },
    #[error("{}: no PEM certificate in it", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)", path.display())]
    NoKey { path: PathBuf },
    #[error("{}: {why}", path.display())]
    BadCertificate { path: PathBuf, why: String },
    #[error("--tls-server-name {name:?} is not a DNS name or IP address")]
    ServerName { name: String },
    #[error("the client certificate and key do not go together: {0}")]
    ClientAuth(String),
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// What one handshake negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3`, `TLSv1.2`.
    pub version: &'static str,
    /// IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
    /// Key-exchange group, e.g. `X25519MLKEM768`, `X25519`.
    pub group: &'static str,
    /// An abbreviated (resumed) handshake rather than a full one.
    pub resumed: bool,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ClientConnection) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            Some(v) => v.as_str().unwrap_or("other"),
            None => "unknown",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let group = conn
            .negotiated_key_exchange_group()
            .and_then(|g| g.name().as_str())
            // TLS 1.2 resumption negotiates no group.
            .unwrap_or("none");
        TlsInfo {
            version,
            cipher,
            group,
            resumed: conn.handshake_kind() == Some(HandshakeKind::Resumed),
        }
    }
}

/// The configured TLS client: one verified configuration, handed out per peer according
/// to the resumption mode.
#[derive(Debug, Clone)]
pub struct TlsClient {
    base: Arc<ClientConfig>,
    mode: ResumptionMode,
    server_name: Option<ServerName<'static>>,
    /// Certificates are not verified (`--insecure`).
    pub insecure: bool,
}

/// The TLS configuration one peer connects with: for `per-peer` resumption it carries
/// the peer's own session cache, otherwise it is the shared one.
#[derive(Debug, Clone)]
pub struct TlsSession(pub(super) Arc<ClientConfig>);

/// Resumption sessions a per-peer cache holds: one server name, a few tickets.
const PER_PEER_SESSIONS: usize = 2;

impl TlsClient {
    /// Builds the configuration: reads every file now, so a typo fails before a run.
    /// `extra_roots` are PEM certificates trusted on top of the flags' (the embedded
    /// server's self-signed certificate).
    pub fn new(args: &TlsArgs, extra_roots: Option<&str>) -> Result<TlsClient, TlsConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsConfigError::Config(e.to_string()))?;
        let builder = if args.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(
                    provider.signature_verification_algorithms,
                )))
        } else {
            let roots = trust_store(&args.cacert, extra_roots)?;
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsConfigError::Config(e.to_string()))?;
            builder.with_webpki_verifier(verifier)
        };
        let mut config = match (&args.client_cert, &args.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert)?;
                let key = read_key(key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsConfigError::ClientAuth(e.to_string()))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // Writes nothing unless SSLKEYLOGFILE names a file (Wireshark decryption).
        config.key_log = Arc::new(rustls::KeyLogFile::new());
        config.resumption = match args.tls_resumption {
            ResumptionMode::Off => Resumption::disabled(),
            ResumptionMode::PerPeer => Resumption::in_memory_sessions(PER_PEER_SESSIONS),
            ResumptionMode::Shared => Resumption::in_memory_sessions(1024),
        };
        let server_name = args
            .tls_server_name
            .as_ref()
            .map(|n| {
                ServerName::try_from(n.clone())
                    .map_err(|_| TlsConfigError::ServerName { name: n.clone() })
            })
            .transpose()?;
        Ok(TlsClient {
            base: Arc::new(config),
            mode: args.tls_resumption,
            server_name,
            insecure: args.insecure,
        })
    }

    /// The configuration for one peer (a fresh session cache with `per-peer`).
    pub fn session(&self) -> TlsSession {
        match self.mode {
            ResumptionMode::PerPeer => {
                let mut c = (*self.base).clone();
                c.resumption = Resumption::in_memory_sessions(PER_PEER_SESSIONS);
                TlsSession(Arc::new(c))
            }
            ResumptionMode::Off | ResumptionMode::Shared => TlsSession(self.base.clone()),
        }
    }

    /// The shared configuration (REST clients, probes).
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.base
    }

    pub fn resumption(&self) -> ResumptionMode {
        self.mode
    }

    /// `off`, `per-peer` or `shared`, as the flag spells it.
    pub fn resumption_name(&self) -> &'static str {
        match self.mode {
            ResumptionMode::Off => "off",
            ResumptionMode::PerPeer => "per-peer",
            ResumptionMode::Shared => "shared",
        }
    }

    /// The name to present for `host`: `--tls-server-name`, else the host itself.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => ServerName::try_from(host.to_owned())
                .map_err(|_| format!("{host:?} is not a valid TLS server name")),
        }
    }
}

/// Platform roots + Mozilla's + the given PEM files.
fn trust_store(files: &[PathBuf], extra: Option<&str>) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // Unreadable platform certificates are skipped, as browsers do; Mozilla's remain.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for path in files {
        for cert in read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| TlsConfigError::BadCertificate {
                    path: path.clone(),
                    why: e.to_string(),
                })?;
        }
    }
    if let Some(pem) = extra {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()).flatten() {
            let _ = roots.add(cert);
        }
    }
    Ok(roots)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let bytes = std::fs::read(path).map_err(|e| TlsConfigError::Read {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsConfigError::BadCertificate {
            path: path.to_owned(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    let bytes = std::fs::read(path).map_err(|e| TlsConfigError::Read {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsConfigError::NoKey {
        path: path.to_owned(),
    })
}

/// `--insecure`: any certificate is accepted, but handshake signatures are still
/// checked (so the connection is at least to whoever holds the presented key).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The provider every TLS configuration of the harness uses.
pub fn provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_to_worker_arguments() {
        let a = TlsArgs {
            cacert: vec!["ca.pem".into()],
            insecure: true,
            connect_to: vec![ConnectTo::parse("h:443:127.0.0.1:8443").unwrap()],
            tls_server_name: Some("h".into()),
            tls_resumption: ResumptionMode::PerPeer,
            ..Default::default()
        };
        assert_eq!(
            a.to_args(),
            [
                "--cacert",
                "ca.pem",
                "--insecure",
                "--connect-to",
                "h:443:127.0.0.1:8443",
                "--tls-server-name",
                "h",
                "--tls-resumption",
                "per-peer"
            ]
        );
    }

    #[test]
    fn missing_and_empty_files_are_named() {
        let a = TlsArgs {
            cacert: vec!["/nonexistent/ca.pem".into()],
            ..Default::default()
        };
        let e = TlsClient::new(&a, None).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let dir = std::env::temp_dir().join(format!("stampede-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let a = TlsArgs {
            cacert: vec![empty.clone()],
            ..Default::default()
        };
        let e = TlsClient::new(&a, None).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
        let a = TlsArgs {
            client_cert: Some(empty.clone()),
            client_key: Some(empty.clone()),
            ..Default::default()
        };
        let e = TlsClient::new(&a, None).unwrap_err().to_string();
        assert!(e.contains("empty.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sessions_follow_the_resumption_mode() {
        let shared = TlsClient::new(
            &TlsArgs {
                tls_resumption: ResumptionMode::Shared,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!(Arc::ptr_eq(&shared.session().0, &shared.session().0));
        let per_peer = TlsClient::new(
            &TlsArgs {
                tls_resumption: ResumptionMode::PerPeer,
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert!(!Arc::ptr_eq(&per_peer.session().0, &per_peer.session().0));
        let named = TlsClient::new(
            &TlsArgs {
                tls_server_name: Some("api.example.com".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(
            named.server_name("127.0.0.1").unwrap(),
            ServerName::try_from("api.example.com").unwrap()
        );
        let e = TlsClient::new(
            &TlsArgs {
                tls_server_name: Some("not a name".into()),
                ..Default::default()
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a name"));
    }
}
