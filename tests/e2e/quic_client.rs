//! A small HTTP/3 client on quinn + h3, for the e2e tests and the load bench
//! (which includes this file by path).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use quinn::crypto::rustls::QuicClientConfig;
use rustls::pki_types::CertificateDer;

/// A client configuration trusting only `root`, offering ALPN `h3`; with
/// `early_data` it sends requests in 0-RTT when it resumes a session.
pub fn client_config(root: &CertificateDer<'static>, early_data: bool) -> quinn::ClientConfig {
    strata::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("root certificate");
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.enable_early_data = early_data;
    let crypto = QuicClientConfig::try_from(tls).expect("TLS 1.3 client config");
    quinn::ClientConfig::new(Arc::new(crypto))
}

/// A client endpoint on an ephemeral loopback port.
pub fn endpoint(config: quinn::ClientConfig) -> quinn::Endpoint {
    let mut endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    endpoint.set_default_client_config(config);
    endpoint
}

/// One HTTP/3 connection; clone it to send requests concurrently.
#[derive(Clone)]
pub struct H3Connection {
    pub quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
}

/// A fetched response: head and the whole body.
pub struct Fetched {
    pub head: http::Response<()>,
    pub body: Bytes,
}

impl Fetched {
    pub fn status(&self) -> u16 {
        self.head.status().as_u16()
    }

    pub fn header(&self, name: &str) -> &str {
        self.head
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

impl H3Connection {
    /// Connect (full handshake) to `addr` for the name `localhost`.
    pub async fn connect(endpoint: &quinn::Endpoint, addr: SocketAddr) -> H3Connection {
        let quic = endpoint
            .connect(addr, "localhost")
            .expect("connect")
            .await
            .expect("QUIC handshake");
        H3Connection::over(quic).await
    }

    /// Connect resuming an earlier session so requests go out in 0-RTT;
    /// `None` when the client has no session to resume. The future tells
    /// whether the server accepted the early data.
    #[allow(dead_code)]
    pub async fn connect_0rtt(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
    ) -> Option<(H3Connection, quinn::ZeroRttAccepted)> {
        let connecting = endpoint.connect(addr, "localhost").expect("connect");
        let (quic, accepted) = connecting.into_0rtt().ok()?;
        Some((H3Connection::over(quic).await, accepted))
    }

    async fn over(quic: quinn::Connection) -> H3Connection {
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
            .await
            .expect("HTTP/3 setup");
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        H3Connection { quic, send }
    }

    /// Send `request` (no body); the caller reads the response.
    #[allow(dead_code)]
    pub async fn open(
        &self,
        request: http::Request<()>,
    ) -> h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes> {
        let mut send = self.send.clone();
        let mut stream = send.send_request(request).await.expect("send request");
        finish(&mut stream).await;
        stream
    }

    /// Send `request` (no body) and read the whole response.
    pub async fn fetch(&self, request: http::Request<()>) -> Result<Fetched, String> {
        self.fetch_with_body(request, Bytes::new()).await
    }

    /// Send `request` with `body` (none if empty) and read the whole response.
    pub async fn fetch_with_body(
        &self,
        request: http::Request<()>,
        body: Bytes,
    ) -> Result<Fetched, String> {
        let mut send = self.send.clone();
        let mut stream = send
            .send_request(request)
            .await
            .map_err(|e| format!("send request: {e:?}"))?;
        if !body.is_empty() {
            stream
                .send_data(body)
                .await
                .map_err(|e| format!("request body: {e:?}"))?;
        }
        finish(&mut stream).await;
        let head = stream
            .recv_response()
            .await
            .map_err(|e| format!("response head: {e:?}"))?;
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream
            .recv_data()
            .await
            .map_err(|e| format!("response body: {e:?}"))?
        {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Ok(Fetched {
            head,
            body: body.freeze(),
        })
    }

    /// GET `path` from `localhost`.
    pub async fn get(&self, path: &str) -> Fetched {
        self.fetch(request("GET", path, &[]))
            .await
            .expect("HTTP/3 GET")
    }

    /// Close the way browsers do: application close, code 0.
    pub fn close(&self) {
        self.quic.close(0u32.into(), b"done");
    }
}

/// End the request. The server may have answered and stopped reading
/// (STOP_SENDING, RFC 9114 §4.1) before our FIN went out; the response read
/// reports anything that matters.
async fn finish(stream: &mut h3::client::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>) {
    let _ = stream.finish().await;
}

/// A request to `https://localhost{path}` with extra headers.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request")
}
