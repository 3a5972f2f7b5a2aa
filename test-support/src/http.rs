//! An HTTP/1.1 or HTTP/2 client for the HTTP front ends (hyper's own client
//! connection, plain or over rustls with the test CA), and JSON answers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::HeaderMap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::certs::{Issued, Pki};

/// Which HTTP version a [`HttpClient`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge in the clear, ALPN `h2` over TLS).
    Http2,
}

enum Sender {
    Http1(http1::SendRequest<Full<Bytes>>),
    Http2(http2::SendRequest<Full<Bytes>>),
}

/// One HTTP connection.
pub struct HttpClient {
    sender: Sender,
    served: Option<rustls_pki_types::CertificateDer<'static>>,
}

/// A response: its status, headers and body (parsed as JSON when it is JSON).
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body as JSON, or `Null` if it is empty or not JSON.
    pub json: serde_json::Value,
    /// The body as text.
    pub text: String,
}

impl HttpClient {
    /// A plain-text connection to `addr`.
    pub async fn connect(addr: SocketAddr, version: Version) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        Self::over(tcp, version).await
    }

    /// A TLS connection to `addr` trusting `pki`, presenting `client` if given, with
    /// ALPN for `version`, in TLS `tls_version`.
    pub async fn connect_tls(
        addr: SocketAddr,
        version: Version,
        pki: &Pki,
        client: Option<&Issued>,
        tls_version: &'static rustls::SupportedProtocolVersion,
    ) -> std::io::Result<Self> {
        let mut config = crate::certs::rustls_client(pki, client, tls_version);
        config.alpn_protocols = vec![match version {
            Version::Http1 => b"http/1.1".to_vec(),
            Version::Http2 => b"h2".to_vec(),
        }];
        let tcp = TcpStream::connect(addr).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let stream = connector.connect("localhost".try_into().unwrap(), tcp).await?;
        let served = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).cloned();
        let mut client = Self::over(stream, version).await?;
        client.served = served.map(|cert| cert.into_owned());
        Ok(client)
    }

    /// The certificate the server presented (TLS connections).
    pub fn served_certificate(&self) -> Option<&rustls_pki_types::CertificateDer<'static>> {
        self.served.as_ref()
    }

    async fn over<S>(stream: S, version: Version) -> std::io::Result<Self>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(stream);
        let sender = match version {
            Version::Http1 => {
                let (sender, connection) = http1::handshake(io).await.map_err(std::io::Error::other)?;
                tokio::spawn(connection);
                Sender::Http1(sender)
            }
            Version::Http2 => {
                let (sender, connection) =
                    http2::handshake(TokioExecutor::new(), io).await.map_err(std::io::Error::other)?;
                tokio::spawn(connection);
                Sender::Http2(sender)
            }
        };
        Ok(Self { sender, served: None })
    }

    /// Sends `method path` with `headers` and `body`, and reads the whole answer.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> hyper::Result<Answer> {
        let mut request = hyper::Request::builder().method(method).uri(path);
        if let Sender::Http1(_) = self.sender {
            request = request.header("host", "localhost");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let response = match &mut self.sender {
            Sender::Http1(sender) => sender.send_request(request).await?,
            Sender::Http2(sender) => sender.send_request(request).await?,
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok(Answer { status, headers, json, text })
    }

    /// `send` with a JSON body (or none for `Null`) and the token, panicking on a
    /// connection error.
    pub async fn call(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> Answer {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(token) = token {
            headers.push(("x-vault-token", token));
        }
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).unwrap() };
        self.send(method, path, &headers, body).await.unwrap()
    }
}
