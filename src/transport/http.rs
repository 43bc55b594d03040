//! One HTTP/1.1 request on a fresh connection (`http://` or `https://`), through the
//! same connect path as WebSockets: the REST control plane of the conformance suite,
//! probes and tests.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;

use super::{ConnectError, Connector, Endpoint, Phases};

/// Bodies larger than this are refused: a misbehaving server cannot grow our memory.
pub const MAX_BODY: usize = 8 << 20;

/// An HTTP response, body collected.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    pub phases: Phases,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{method} {url}: {why}")]
    Exchange {
        method: String,
        url: String,
        why: String,
    },
    #[error("{method} {url}: no response within {} ms", after.as_millis())]
    Timeout {
        method: String,
        url: String,
        after: Duration,
    },
}

impl Connector {
    /// Sends one request and collects the response, all within `timeout`. A body is sent
    /// as JSON unless `headers` name a content type.
    pub async fn http(
        &self,
        url: &str,
        method: &str,
        headers: &[(String, String)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Response, HttpError> {
        let exchange = |why: String| HttpError::Exchange {
            method: method.to_owned(),
            url: url.to_owned(),
            why,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let ep = Endpoint::parse(url)?;
        if ep.websocket {
            return Err(exchange(
                "an HTTP URL starts with http:// or https://".into(),
            ));
        }
        let fut = async {
            let mut phases = Phases::default();
            let (stream, _) = self
                .stream(&ep, None, None, None, deadline, &mut phases)
                .await?;
            let t = std::time::Instant::now();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| exchange(format!("HTTP handshake failed: {e}")))?;
            // Dropped with the response: the connection lives exactly one request.
            let conn = tokio::spawn(conn);
            let mut builder = hyper::Request::builder()
                .method(method)
                .uri(&ep.path_and_query)
                .header(hyper::header::HOST, ep.authority());
            for (k, v) in headers {
                builder = builder.header(k.as_str(), v.as_str());
            }
            if body.is_some()
                && !headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let request = builder
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| exchange(format!("cannot build the request: {e}")))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| exchange(e.to_string()))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| exchange(format!("reading the body: {e}")))?
                .to_bytes()
                .to_vec();
            phases.upgrade = t.elapsed();
            conn.abort();
            Ok(Response {
                status,
                body,
                phases,
            })
        };
        tokio::time::timeout_at(deadline, fut)
            .await
            .map_err(|_| HttpError::Timeout {
                method: method.to_owned(),
                url: url.to_owned(),
                after: timeout,
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_are_bounded_and_timeouts_named() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // First connection: a body over the limit; second: never answers.
            if let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                    MAX_BODY + 1
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&vec![b'x'; MAX_BODY + 1]).await;
            }
            if let Ok((s, _)) = listener.accept().await {
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(s);
            }
        });
        let c = Connector::default();
        let url = format!("http://{addr}/v1/usage");
        let e = c
            .http(&url, "GET", &[], None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("body"), "{e}");
        let e = c
            .http(&url, "GET", &[], None, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Timeout { .. }), "{e}");
    }
}
