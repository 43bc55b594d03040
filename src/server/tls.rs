//! TLS for the reference server (`wss://`, `https://` on the one port): the rustls
//! [`ServerConfig`] built from PEM certificate and key, an optional client-certificate
//! requirement, and certificate generation (self-signed, or a small CA issuing leaves) for
//! `--tls-self-signed`, the embedded server and tests.
//!
//! The aws-lc-rs provider is always passed explicitly: with rustls' default features off no
//! process-level provider exists, and relying on one panics at the first handshake
//! (LIMITS.md, "rustls traps"). Imports nothing else from the crate.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Bound on one TLS handshake: a client that connects and never finishes must not hold a
/// descriptor (the HTTP layer after it has its own 10 s header timeout).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS sessions kept server-side for clients that resume by session id (TLS 1.2 without
/// tickets). Everyone else resumes with stateless tickets, which cost no server memory;
/// rustls' default of 256 entries would evict most of a 1,000-peer resumption run.
const SESSION_CACHE_ENTRIES: usize = 16_384;

/// The names of this host on loopback: a certificate for them serves `https://localhost`,
/// `https://127.0.0.1` and `https://[::1]`.
pub const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// PEM text, in a file or in memory.
#[derive(Clone)]
pub enum Pem {
    File(PathBuf),
    Text(String),
}

impl Pem {
    /// How errors and the banner name it: the file's path, or "the in-memory WHAT".
    pub fn name(&self, what: &str) -> String {
        match self {
            Pem::File(path) => path.display().to_string(),
            Pem::Text(_) => format!("the in-memory {what}"),
        }
    }
}

impl fmt::Debug for Pem {
    // Never print the text: it may be a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            Pem::Text(t) => write!(f, "Text(<{} bytes>)", t.len()),
        }
    }
}

/// Where the server's certificate, key and (optionally) client CA come from. Read when
/// the server starts, so a bad file stops it before it listens.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: Pem,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Pem,
    /// When set, clients must present a certificate issued by one of these CAs; a client
    /// without one fails the handshake.
    pub client_ca: Option<Pem>,
}

impl TlsConfig {
    /// Certificate chain and key from PEM files.
    pub fn files(cert: &Path, key: &Path) -> TlsConfig {
        TlsConfig {
            cert: Pem::File(cert.to_owned()),
            key: Pem::File(key.to_owned()),
            client_ca: None,
        }
    }

    /// A generated (or otherwise in-memory) certificate and key.
    pub fn generated(g: &Generated) -> TlsConfig {
        TlsConfig {
            cert: Pem::Text(g.cert_pem.clone()),
            key: Pem::Text(g.key_pem.clone()),
            client_ca: None,
        }
    }
}

/// A TLS setup problem; each names the file (or in-memory PEM) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} file {name}")]
    Read {
        what: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid PEM in {name}: {why}")]
    Pem { name: String, why: String },
    #[error("no certificate in {name}: expected a PEM `BEGIN CERTIFICATE` block")]
    NoCertificate { name: String },
    #[error(
        "no private key in {name}: expected a PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` block"
    )]
    NoKey { name: String },
    #[error(
        "key does not match certificate: {key} is not the private key of the first certificate in {cert}"
    )]
    KeyMismatch { cert: String, key: String },
    #[error("unusable TLS certificate {cert} or key {key}")]
    Unusable {
        cert: String,
        key: String,
        #[source]
        source: rustls::Error,
    },
    #[error("invalid client CA in {name}: {why}")]
    ClientCa { name: String, why: String },
    #[error("cannot set up TLS")]
    Setup(#[source] rustls::Error),
    #[error("cannot generate a certificate for {names:?}")]
    Generate {
        names: Vec<String>,
        #[source]
        source: rcgen::Error,
    },
}

/// The crypto provider of every TLS config here, chosen explicitly (see the module docs).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The acceptor for `cfg`: reads the PEM, checks the key against the certificate, and sets
/// ALPN `http/1.1` and session resumption (stateless tickets plus a session cache).
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(cfg)?))
}

/// The rustls configuration behind [`acceptor`].
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let chain = read_certs(&cfg.cert, "certificate")?;
    let key = read_key(&cfg.key)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let name = ca.name("client CA");
            let mut roots = RootCertStore::empty();
            for cert in read_certs(ca, "client CA")? {
                roots.add(cert).map_err(|e| TlsError::ClientCa {
                    name: name.clone(),
                    why: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    name,
                    why: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let (cert_name, key_name) = (cfg.cert.name("certificate"), cfg.key.name("key"));
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert: cert_name.clone(),
                    key: key_name.clone(),
                }
            }
            source => TlsError::Unusable {
                cert: cert_name.clone(),
                key: key_name.clone(),
                source,
            },
        })?;
    // One protocol: the WebSocket upgrade, REST and the admin hook are all HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(TlsError::Setup)?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(Arc::new(config))
}

fn pem_error(pem: &Pem, what: &'static str, e: pem::Error) -> TlsError {
    let name = pem.name(what);
    match e {
        pem::Error::Io(source) => TlsError::Read { what, name, source },
        pem::Error::NoItemsFound if what == "key" => TlsError::NoKey { name },
        pem::Error::NoItemsFound => TlsError::NoCertificate { name },
        e => TlsError::Pem {
            name,
            why: e.to_string(),
        },
    }
}

fn read_certs(pem: &Pem, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = match pem {
        Pem::File(path) => CertificateDer::pem_file_iter(path)
            .map_err(|e| pem_error(pem, what, e))?
            .collect(),
        Pem::Text(text) => CertificateDer::pem_slice_iter(text.as_bytes()).collect(),
    };
    let certs = certs.map_err(|e| pem_error(pem, what, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            name: pem.name(what),
        });
    }
    Ok(certs)
}

fn read_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, TlsError> {
    match pem {
        Pem::File(path) => PrivateKeyDer::from_pem_file(path),
        Pem::Text(text) => PrivateKeyDer::from_pem_slice(text.as_bytes()),
    }
    .map_err(|e| pem_error(pem, "key", e))
}

// ---- certificate generation ------------------------------------------------------------

/// A generated certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Generated {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Generated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generated")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// When a generated certificate is valid.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago (clocks of two hosts differ) until `days` days from now.
    pub fn days(days: u64) -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(days * 86_400),
        }
    }

    /// Valid for a day that ended yesterday: an expired certificate.
    pub fn expired() -> Validity {
        let now = SystemTime::now();
        Validity {
            not_before: now - Duration::from_secs(2 * 86_400),
            not_after: now - Duration::from_secs(86_400),
        }
    }
}

/// Parameters of a leaf for `names`: IP addresses become IP SANs, the rest DNS SANs (rcgen
/// decides by parsing), the first name is the common name.
fn leaf_params(
    names: &[&str],
    validity: Validity,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, TlsError> {
    let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params =
        CertificateParams::new(owned.clone()).map_err(|source| generate_error(names, source))?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    Ok(params)
}

fn generate_error(names: &[&str], source: rcgen::Error) -> TlsError {
    TlsError::Generate {
        names: names.iter().map(|n| n.to_string()).collect(),
        source,
    }
}

/// A self-signed server certificate for `names` (ECDSA P-256: fast to make and to
/// handshake with). Clients trust it by trusting `cert_pem` itself.
pub fn self_signed(names: &[&str], validity: Validity) -> Result<Generated, TlsError> {
    let params = leaf_params(names, validity, ExtendedKeyUsagePurpose::ServerAuth)?;
    let key = KeyPair::generate().map_err(|e| generate_error(names, e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| generate_error(names, e))?;
    Ok(Generated {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A certificate authority that issues server and client certificates (for tests of
/// unknown CAs, wrong names, expiry and client certificates).
pub struct CertAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A new CA named `common_name`, valid from an hour ago for ten years.
pub fn ca(common_name: &str) -> Result<CertAuthority, TlsError> {
    let names = [common_name];
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| generate_error(&names, e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let validity = Validity::days(3650);
    params.not_before = validity.not_before.into();
    params.not_after = validity.not_after.into();
    let key = KeyPair::generate().map_err(|e| generate_error(&names, e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| generate_error(&names, e))?;
    Ok(CertAuthority {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

impl CertAuthority {
    /// The CA certificate: what clients trust (or what `--tls-client-ca` names).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A leaf for `names` signed by this CA: a client certificate when `client_auth`
    /// (extended key usage clientAuth), else a server certificate (serverAuth).
    pub fn issue(
        &self,
        names: &[&str],
        validity: Validity,
        client_auth: bool,
    ) -> Result<Generated, TlsError> {
        let usage = if client_auth {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        };
        let mut params = leaf_params(names, validity, usage)?;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| generate_error(names, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| generate_error(names, e))?;
        Ok(Generated {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Where [`Generated::write_to_new_temp_dir`] put the files.
#[derive(Debug, Clone)]
pub struct PemFiles {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Generated {
    /// Writes `cert.pem` and `key.pem` into a new directory under the system temp dir,
    /// readable by the owner only (the key is a secret). Nothing removes them: clients
    /// need the certificate as long as the server runs, and a restart can reuse both with
    /// `--tls-cert` / `--tls-key`.
    pub fn write_to_new_temp_dir(&self) -> std::io::Result<PemFiles> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let base = std::env::temp_dir();
        let mut attempt = 0;
        let dir = loop {
            // create_dir fails on an existing path, so a guessed name cannot be hijacked.
            let dir = base.join(format!(
                "stampede-tls-{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let write = |name: &str, text: &str| -> std::io::Result<PathBuf> {
            let path = dir.join(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?
                .write_all(text.as_bytes())?;
            Ok(path)
        };
        let cert = write("cert.pem", &self.cert_pem)?;
        let key = write("key.pem", &self.key_pem)?;
        Ok(PemFiles { dir, cert, key })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_files(g: &Generated) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, &g.cert_pem).unwrap();
        std::fs::write(&key, &g.key_pem).unwrap();
        (dir, cert, key)
    }

    #[test]
    fn generated_certificates_load_from_memory_and_files() {
        let g = self_signed(&LOOPBACK_NAMES, Validity::days(1)).unwrap();
        assert!(g.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(g.key_pem.contains("PRIVATE KEY"));
        assert!(!format!("{g:?}").contains(&g.key_pem));
        let cfg = server_config(&TlsConfig::generated(&g)).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(cfg.ticketer.enabled());
        let (_dir, cert, key) = with_files(&g);
        server_config(&TlsConfig::files(&cert, &key)).unwrap();

        let ca = ca("stampede test CA").unwrap();
        let leaf = ca.issue(&["localhost"], Validity::days(1), false).unwrap();
        let mut tls = TlsConfig::generated(&leaf);
        tls.client_ca = Some(Pem::Text(ca.cert_pem().to_owned()));
        server_config(&tls).unwrap();
    }

    #[test]
    fn written_files_are_private_and_loadable() {
        use std::os::unix::fs::PermissionsExt;
        let g = self_signed(&["localhost"], Validity::days(1)).unwrap();
        let files = g.write_to_new_temp_dir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&files.dir), mode(&files.key)), (0o700, 0o600));
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), g.cert_pem);
        let loaded = server_config(&TlsConfig::files(&files.cert, &files.key));
        std::fs::remove_dir_all(&files.dir).unwrap();
        loaded.unwrap();
    }

    #[test]
    fn bad_files_say_which_and_what() {
        let g = self_signed(&["localhost"], Validity::days(1)).unwrap();
        let (dir, cert, key) = with_files(&g);
        let err = |cfg: &TlsConfig| server_config(cfg).unwrap_err().to_string();

        let missing = dir.path().join("missing.pem");
        let e = err(&TlsConfig::files(&missing, &key));
        assert!(
            e.starts_with("cannot read TLS certificate file") && e.contains("missing.pem"),
            "{e}"
        );
        // The key file given as the certificate, and the other way round.
        let e = err(&TlsConfig::files(&key, &key));
        assert!(
            e.starts_with("no certificate in") && e.contains("key.pem"),
            "{e}"
        );
        let e = err(&TlsConfig::files(&cert, &cert));
        assert!(
            e.starts_with("no private key in") && e.contains("cert.pem"),
            "{e}"
        );

        let garbled = dir.path().join("garbled.pem");
        std::fs::write(&garbled, "-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap();
        let e = err(&TlsConfig::files(&garbled, &key));
        assert!(
            e.starts_with("invalid PEM in") && e.contains("garbled.pem"),
            "{e}"
        );

        let mut with_ca = TlsConfig::files(&cert, &key);
        with_ca.client_ca = Some(Pem::File(key.clone()));
        let e = err(&with_ca);
        assert!(
            e.starts_with("no certificate in") && e.contains("key.pem"),
            "{e}"
        );

        let in_memory = TlsConfig {
            cert: Pem::Text(String::new()),
            key: Pem::Text(g.key_pem.clone()),
            client_ca: None,
        };
        assert!(err(&in_memory).contains("the in-memory certificate"));
    }

    #[test]
    fn a_key_from_another_certificate_is_refused() {
        let a = self_signed(&["localhost"], Validity::days(1)).unwrap();
        let b = self_signed(&["localhost"], Validity::days(1)).unwrap();
        let (_dir, cert, _) = with_files(&a);
        let (_dir2, _, other_key) = with_files(&b);
        let e = server_config(&TlsConfig::files(&cert, &other_key))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("key does not match certificate")
                && e.contains("key.pem")
                && e.contains("cert.pem"),
            "{e}"
        );
    }

    #[test]
    fn bad_names_are_an_error_not_a_panic() {
        let e = self_signed(&["not a name\u{7f}é"], Validity::days(1)).unwrap_err();
        assert!(
            e.to_string().starts_with("cannot generate a certificate"),
            "{e}"
        );
    }

    #[test]
    fn debug_never_shows_key_text() {
        let pem = Pem::Text("-----BEGIN PRIVATE KEY-----".into());
        assert_eq!(format!("{pem:?}"), "Text(<27 bytes>)");
    }
}
