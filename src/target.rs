//! Where the harness sends traffic: a server under test, reached only through its URLs
//! and credentials. The embedded reference server is described the same way.

/// A server under test, as the conformance runner and the load engine see it.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// WebSocket endpoint, e.g. `ws://127.0.0.1:8080/v1`.
    pub ws_url: String,
    /// REST base, e.g. `http://127.0.0.1:8080/v1`.
    pub rest_url: String,
    /// Secret key id (`kid` of minted tokens, REST auth).
    pub key_id: Option<String>,
    /// Signing secret of `key_id`.
    pub secret: Option<String>,
    /// A publishable key (`?key=`), when one is known.
    pub publishable_key: Option<String>,
    /// A second app's secret key, for tenant-isolation checks (AUTHZ-9).
    pub other_app: Option<(String, String)>,
    /// Bearer token of the reference server's admin hook (CFG-7); only the embedded
    /// server (or one started with `--admin-token`) has it.
    pub admin_token: Option<String>,
    /// True when this is the in-process reference server.
    pub embedded: bool,
    /// PEM of a certificate the harness must trust to reach this target (the embedded
    /// server's self-signed certificate); `None` = the system's trust roots.
    pub ca_pem: Option<String>,
}
