//! A raw protocol connection, frames in and frames out with nothing hidden, and
//! requests and frames built by hand.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use keymux_protocol::{
    Algorithm, ClientCodec, Limits, Reply, Request, RequestFrame, ResponseFrame, SecretBytes, Status,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite};

/// A raw protocol connection: frames in, frames out, nothing hidden.
pub struct RawClient {
    /// Requests out.
    pub writer: FramedWrite<OwnedWriteHalf, ClientCodec>,
    /// Responses in.
    pub reader: FramedRead<OwnedReadHalf, ClientCodec>,
}

impl RawClient {
    /// Connects to `addr`; no HELLO is sent.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        Self {
            writer: FramedWrite::new(write, ClientCodec::new(Limits::default())),
            reader: FramedRead::new(read, ClientCodec::new(Limits::default())),
        }
    }

    /// Sends `frame`.
    pub async fn send(&mut self, frame: &RequestFrame) {
        self.writer.send(frame).await.unwrap();
    }

    /// Writes raw bytes, bypassing the encoder.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next response, or `None` once the proxy closed the connection.
    pub async fn recv(&mut self) -> Option<ResponseFrame> {
        match tokio::time::timeout(Duration::from_secs(10), self.reader.next()).await {
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(_)) | None) => None,
            Err(_) => panic!("no response within 10 s"),
        }
    }

    /// Sends `frame` and returns the next response, which must answer it.
    pub async fn call(&mut self, frame: RequestFrame) -> ResponseFrame {
        let id = frame.request_id;
        self.send(&frame).await;
        let response = self.recv().await.expect("connection closed");
        assert_eq!(response.request_id, id);
        response
    }

    /// Wraps `dek` under `key`: the blob, or the failure's status.
    pub async fn wrap(&mut self, key: &str, aad: &[u8], dek: &[u8]) -> Result<Vec<u8>, Status> {
        let request =
            Request::Wrap { key: key.into(), aad: aad.to_vec(), plaintext: SecretBytes::copy_from(dek) };
        match self.call(RequestFrame::new(1, request)).await.result {
            Ok(Reply::Wrap { blob }) => Ok(blob),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(failure) => Err(failure.status),
        }
    }

    /// Unwraps `blob`: the plaintext, or the failure's status.
    pub async fn unwrap(&mut self, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, Status> {
        self.unwrap_with(aad, blob, false).await
    }

    /// [`RawClient::unwrap`], past the cache if `bypass_cache`.
    pub async fn unwrap_with(
        &mut self,
        aad: &[u8],
        blob: &[u8],
        bypass_cache: bool,
    ) -> Result<Vec<u8>, Status> {
        let mut frame = RequestFrame::new(2, unwrap_request(aad, blob));
        frame.bypass_cache = bypass_cache;
        match self.call(frame).await.result {
            Ok(Reply::Unwrap { plaintext }) => Ok(plaintext.expose().to_vec()),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(failure) => Err(failure.status),
        }
    }

    /// Signs `input` (a digest if `digest`) with `key`: (version, signature), or the
    /// failure's status.
    pub async fn sign(&mut self, key: &str, input: &[u8], digest: bool) -> Result<(u32, Vec<u8>), Status> {
        let request = Request::Sign { key: key.into(), input: input.to_vec(), digest };
        match self.call(RequestFrame::new(3, request)).await.result {
            Ok(Reply::Sign { version, signature }) => Ok((version, signature)),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(failure) => Err(failure.status),
        }
    }

    /// Verifies `signature` over `input` (a digest if `digest`) with `version` of `key`:
    /// whether it is valid, or the failure's status.
    pub async fn verify(
        &mut self,
        key: &str,
        version: u32,
        input: &[u8],
        signature: &[u8],
        digest: bool,
    ) -> Result<bool, Status> {
        let request = Request::Verify {
            key: key.into(),
            version,
            input: input.to_vec(),
            signature: signature.to_vec(),
            digest,
        };
        match self.call(RequestFrame::new(4, request)).await.result {
            Ok(Reply::Verify { valid }) => Ok(valid),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(failure) => Err(failure.status),
        }
    }

    /// The public key of `version` (0: current) of `key`: (version, algorithm, DER
    /// SubjectPublicKeyInfo), or the failure's status.
    pub async fn public_key(&mut self, key: &str, version: u32) -> Result<(u32, Algorithm, Vec<u8>), Status> {
        let request = Request::GetPublicKey { key: key.into(), version };
        match self.call(RequestFrame::new(5, request)).await.result {
            Ok(Reply::PublicKey { version, algorithm, public_key }) => Ok((version, algorithm, public_key)),
            Ok(other) => panic!("unexpected reply {other:?}"),
            Err(failure) => Err(failure.status),
        }
    }

    /// A PING that must be answered PONG.
    pub async fn ping(&mut self) {
        let response = self.call(RequestFrame::new(99, Request::Ping)).await;
        assert!(matches!(response.result, Ok(Reply::Pong)), "{response:?}");
    }
}

/// A WRAP request of `dek` under `key`.
pub fn wrap_request(key: &str, aad: &[u8], dek: &[u8]) -> Request {
    Request::Wrap { key: key.into(), aad: aad.to_vec(), plaintext: SecretBytes::copy_from(dek) }
}

/// An UNWRAP request of `blob`.
pub fn unwrap_request(aad: &[u8], blob: &[u8]) -> Request {
    Request::Unwrap { aad: aad.to_vec(), blob: blob.to_vec() }
}

/// Encodes a frame by hand: `length | version | opcode | flags | id | payload`.
pub fn raw_frame(version: u8, opcode: u8, flags: u16, id: u64, payload: &[u8]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.extend_from_slice(&[version, opcode]);
    body.extend_from_slice(&flags.to_be_bytes());
    body.extend_from_slice(&id.to_be_bytes());
    body.extend_from_slice(payload);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}
