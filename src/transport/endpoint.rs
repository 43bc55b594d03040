//! URLs the harness dials (`ws`, `wss`, `http`, `https`) and curl's `--connect-to`
//! rewrites of where they are dialled.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::error::{ConnectError, Stage};

/// A parsed URL: what to dial and what to say once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As given (with its query), for messages.
    pub url: String,
    /// `wss` or `https`.
    pub secure: bool,
    /// `ws`/`wss` (a WebSocket endpoint) rather than `http`/`https`.
    pub websocket: bool,
    /// Host without IPv6 brackets: the TLS server name, the certificate name and (with
    /// the port) the Host header.
    pub host: String,
    pub port: u16,
    /// Path and query, e.g. `/v1?token=…` (at least `/`).
    pub path_and_query: String,
}

impl Endpoint {
    /// Parses `url`; `ws`, `wss`, `http` and `https` are accepted.
    pub fn parse(url: &str) -> Result<Endpoint, ConnectError> {
        let bad = |why: String| ConnectError::Url {
            url: url.to_owned(),
            why,
        };
        if !url.contains("://") {
            return Err(bad(
                "no scheme; write e.g. wss://host/v1 or ws://127.0.0.1:8080/v1".into(),
            ));
        }
        let uri: hyper::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
        let (secure, websocket) = match uri.scheme_str() {
            Some("ws") => (false, true),
            Some("wss") => (true, true),
            Some("http") => (false, false),
            Some("https") => (true, false),
            Some(other) => {
                return Err(bad(format!(
                    "unsupported scheme {other}://; use ws://, wss://, http:// or https://"
                )));
            }
            None => {
                return Err(bad(
                    "no scheme; write e.g. wss://host/v1 or ws://127.0.0.1:8080/v1".into(),
                ));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        // `Uri::port` hides a port that is not a u16, so read it from the authority.
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let after_userinfo = authority.rsplit('@').next().unwrap_or_default();
        let port_text = match after_userinfo.rfind(']') {
            Some(i) => after_userinfo[i + 1..].strip_prefix(':'),
            None => after_userinfo.rsplit_once(':').map(|(_, p)| p),
        };
        let port = match port_text {
            None | Some("") => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 => n,
                _ => return Err(bad(format!("port {p} is not 1-65535"))),
            },
        };
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .map(|p| {
                if p.starts_with('/') {
                    p
                } else {
                    format!("/{p}")
                }
            })
            .unwrap_or_else(|| "/".into());
        Ok(Endpoint {
            url: url.to_owned(),
            secure,
            websocket,
            host,
            port,
            path_and_query,
        })
    }

    /// `host:port` with IPv6 brackets, for the Host header and messages.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `ws`, `wss`, `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        match (self.websocket, self.secure) {
            (true, false) => "ws",
            (true, true) => "wss",
            (false, false) => "http",
            (false, true) => "https",
        }
    }

    /// The protocol's endpoint path (CONN-1) when the URL names none: `ws://h:p` and
    /// `ws://h:p/?q` become `ws://h:p/v1` and `ws://h:p/v1?q`.
    pub fn or_default_path(mut self, path: &str) -> Endpoint {
        if self.path_and_query == "/" || self.path_and_query.starts_with("/?") {
            self.path_and_query = format!("{path}{}", &self.path_and_query[1..]);
            self.url = format!(
                "{}://{}{}",
                self.scheme(),
                self.authority(),
                self.path_and_query
            );
        }
        self
    }

    /// This URL with `query` appended (`?` or `&` as needed).
    pub fn with_query(&self, query: &str) -> String {
        if query.is_empty() {
            return self.url.clone();
        }
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{query}", self.url)
    }

    /// Whether the host names this machine's loopback (`localhost`, 127/8, `::1`).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The REST base of a WebSocket endpoint: `wss://h:p/x/v1?q` → `https://h:p/x/v1`
    /// (`/v1` appended when the path does not end in it).
    pub fn rest_base(ws_url: &str) -> String {
        let rest = if let Some(rest) = ws_url.strip_prefix("wss://") {
            format!("https://{rest}")
        } else if let Some(rest) = ws_url.strip_prefix("ws://") {
            format!("http://{rest}")
        } else {
            ws_url.to_owned()
        };
        let rest = rest
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        if rest.ends_with("/v1") {
            rest
        } else {
            format!("{rest}/v1")
        }
    }
}

/// One `--connect-to HOST:PORT:ADDR:PORT` rule (curl's meaning): connections to
/// HOST:PORT go to ADDR:PORT instead, while the URL's host stays the TLS server name,
/// the certificate name and the Host header. An empty HOST or PORT matches any; an
/// empty ADDR or PORT keeps the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTo {
    host: Option<String>,
    port: Option<u16>,
    to_host: Option<String>,
    to_port: Option<u16>,
}

impl ConnectTo {
    /// Parses `HOST:PORT:ADDR:PORT`; IPv6 addresses go in brackets (`[::1]`).
    pub fn parse(s: &str) -> Result<ConnectTo, String> {
        let fields = split_fields(s).ok_or_else(|| {
            format!(
                "invalid --connect-to {s:?}: use HOST:PORT:ADDR:PORT, e.g. example.com:443:127.0.0.1:8443 (IPv6 in brackets)"
            )
        })?;
        let host = |f: &str| (!f.is_empty()).then(|| unbracket(f).to_ascii_lowercase());
        let port = |f: &str, which: &str| -> Result<Option<u16>, String> {
            if f.is_empty() {
                return Ok(None);
            }
            f.parse::<u16>().map(Some).map_err(|_| {
                format!("invalid --connect-to {s:?}: {which} port {f:?} is not a number 0-65535")
            })
        };
        Ok(ConnectTo {
            host: host(fields[0]),
            port: port(fields[1], "the first")?,
            to_host: host(fields[2]),
            to_port: port(fields[3], "the second")?,
        })
    }

    /// Where `host:port` is dialled under this rule, if it applies.
    fn apply(&self, host: &str, port: u16) -> Option<(String, u16)> {
        let host_matches = self
            .host
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(host));
        let port_matches = self.port.is_none_or(|p| p == port);
        (host_matches && port_matches).then(|| {
            (
                self.to_host.clone().unwrap_or_else(|| host.to_owned()),
                self.to_port.unwrap_or(port),
            )
        })
    }
}

impl fmt::Display for ConnectTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = |h: &Option<String>| match h {
            Some(h) if h.contains(':') => format!("[{h}]"),
            Some(h) => h.clone(),
            None => String::new(),
        };
        let p = |p: &Option<u16>| p.map(|p| p.to_string()).unwrap_or_default();
        write!(
            f,
            "{}:{}:{}:{}",
            h(&self.host),
            p(&self.port),
            h(&self.to_host),
            p(&self.to_port)
        )
    }
}

fn unbracket(s: &str) -> &str {
    s.trim_start_matches('[').trim_end_matches(']')
}

/// Splits on the colons outside brackets; exactly four fields.
fn split_fields(s: &str) -> Option<[&str; 4]> {
    let mut out = Vec::with_capacity(4);
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.try_into().ok()
}

/// Resolves where `ep` is dialled: the first `--connect-to` rule that matches rewrites
/// host and port, then DNS. With `want_v4` (an IPv4 source address is bound), an IPv4
/// address is preferred.
pub async fn resolve(
    ep: &Endpoint,
    rules: &[ConnectTo],
    want_v4: bool,
    timeout: Duration,
) -> Result<SocketAddr, ConnectError> {
    let (host, port) = rules
        .iter()
        .find_map(|r| r.apply(&ep.host, ep.port))
        .unwrap_or_else(|| (ep.host.clone(), ep.port));
    let label = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let looked_up = tokio::time::timeout(timeout, tokio::net::lookup_host((host.as_str(), port)))
        .await
        .map_err(|_| ConnectError::Timeout {
            stage: Stage::Resolve,
            after: timeout,
        })?
        .map_err(|e| ConnectError::Resolve {
            host: label.clone(),
            why: e.to_string(),
        })?;
    let addrs: Vec<SocketAddr> = looked_up.collect();
    addrs
        .iter()
        .find(|a| !want_v4 || a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| ConnectError::Resolve {
            host: label,
            why: "no address".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_with_default_ports() {
        let e = Endpoint::parse("wss://rms.metered.ca/v1?key=pk").unwrap();
        assert!(e.secure && e.websocket);
        assert_eq!((e.host.as_str(), e.port), ("rms.metered.ca", 443));
        assert_eq!(e.path_and_query, "/v1?key=pk");
        let e = Endpoint::parse("ws://[::1]:9/v1").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9));
        assert_eq!(e.authority(), "[::1]:9");
        assert!(e.is_loopback());
        let e = Endpoint::parse("http://localhost").unwrap();
        assert_eq!((e.port, e.path_and_query.as_str()), (80, "/"));
        assert!(!e.websocket && !e.secure);
        assert!(Endpoint::parse("https://x:8443/v1").unwrap().secure);
    }

    #[test]
    fn rejects_what_it_cannot_dial() {
        for (url, says) in [
            ("ftp://x/v1", "unsupported scheme"),
            ("127.0.0.1:8080/v1", "scheme"),
            ("ws:///v1", ""),
            ("ws://h:99999/v1", ""),
        ] {
            let e = Endpoint::parse(url).unwrap_err().to_string();
            assert!(e.contains(url) && e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn queries_append() {
        let e = Endpoint::parse("ws://h:1/v1").unwrap();
        assert_eq!(e.with_query("token=x"), "ws://h:1/v1?token=x");
        let e = Endpoint::parse("ws://h:1/v1?a=b").unwrap();
        assert_eq!(e.with_query("token=x"), "ws://h:1/v1?a=b&token=x");
        let e = Endpoint::parse("wss://h?a=b")
            .unwrap()
            .or_default_path("/v1");
        assert_eq!(e.with_query("token=x"), "wss://h:443/v1?a=b&token=x");
        let e = Endpoint::parse("ws://h/x").unwrap().or_default_path("/v1");
        assert_eq!(e.url, "ws://h/x");
    }

    #[test]
    fn rest_base_from_ws() {
        assert_eq!(
            Endpoint::rest_base("ws://127.0.0.1:9/v1"),
            "http://127.0.0.1:9/v1"
        );
        assert_eq!(
            Endpoint::rest_base("wss://x.example/v1/?key=1"),
            "https://x.example/v1"
        );
        assert_eq!(Endpoint::rest_base("ws://h:1"), "http://h:1/v1");
    }

    #[test]
    fn connect_to_follows_curl() {
        let r = ConnectTo::parse("example.com:443:127.0.0.1:8443").unwrap();
        assert_eq!(
            r.apply("Example.COM", 443),
            Some(("127.0.0.1".into(), 8443))
        );
        assert_eq!(r.apply("example.com", 80), None);
        assert_eq!(r.apply("other", 443), None);
        let any = ConnectTo::parse("::[::1]:").unwrap();
        assert_eq!(any.apply("h", 7), Some(("::1".into(), 7)));
        assert_eq!(any.to_string(), "::[::1]:");
        let keep = ConnectTo::parse("h:1::2").unwrap();
        assert_eq!(keep.apply("h", 1), Some(("h".into(), 2)));
        for bad in ["h:1:a", "h:x:a:1", "h:1:a:70000", ""] {
            let e = ConnectTo::parse(bad).unwrap_err();
            assert!(
                e.contains("HOST:PORT:ADDR:PORT") || e.contains("port"),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn connect_to_rewrites_before_dns() {
        let ep = Endpoint::parse("wss://staging.invalid/v1").unwrap();
        let rules = [ConnectTo::parse("staging.invalid:443:127.0.0.1:9443").unwrap()];
        let addr = resolve(&ep, &rules, true, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(addr, "127.0.0.1:9443".parse().unwrap());
    }
}
