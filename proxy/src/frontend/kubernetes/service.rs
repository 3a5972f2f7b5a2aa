//! The three KMS v2 calls, translated into router requests through the [`FrontDoor`].

use std::sync::Arc;
use std::time::Duration;

use keymux_protocol::{BlobHeader, Failure, Reply, Request, SecretBytes, Status};
use tonic::{Code, Request as GrpcRequest, Response};

use super::metadata;
use super::proto::key_management_service_server::KeyManagementService;
use super::proto::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};
use super::status::StatusCache;
use crate::frontend::{CallOptions, FrontDoor};
use crate::server::peer::Peer;

/// Every ciphertext the plugin makes is bound to this AAD, so a keymux blob made for
/// another client cannot be passed off as an API server's and the reverse.
pub(super) const AAD: &[u8] = b"keymux kubernetes-kms v2";

/// The plugin service.
pub(super) struct KmsPlugin {
    pub(super) door: FrontDoor,
    pub(super) key: String,
    pub(super) request_timeout: Duration,
    pub(super) status_cache_ttl: Duration,
    pub(super) status: StatusCache,
}

impl KmsPlugin {
    fn options(&self) -> CallOptions {
        CallOptions { timeout: Some(self.request_timeout), bypass_cache: false }
    }
}

/// The peer tonic attached to the call's connection.
fn peer_of<T>(request: &GrpcRequest<T>) -> Result<Arc<Peer>, tonic::Status> {
    request
        .extensions()
        .get::<Arc<Peer>>()
        .cloned()
        .ok_or_else(|| tonic::Status::internal("keymux: the connection has no peer"))
}

/// The gRPC status for a router failure: one mapping, here.
pub(super) fn grpc_status(failure: &Failure) -> tonic::Status {
    let code = match failure.status {
        Status::BadRequest => Code::InvalidArgument,
        Status::UnknownKey => Code::NotFound,
        Status::Forbidden => Code::PermissionDenied,
        Status::Integrity => Code::InvalidArgument,
        Status::KeyDisabled => Code::FailedPrecondition,
        Status::Busy => Code::ResourceExhausted,
        Status::BackendUnavailable => Code::Unavailable,
        Status::Timeout => Code::DeadlineExceeded,
        Status::Unsupported => Code::Unimplemented,
        _ => Code::Internal,
    };
    let message = if failure.retry_after_ms > 0 {
        format!("keymux: {} (retry after {} ms)", failure.message, failure.retry_after_ms)
    } else {
        format!("keymux: {}", failure.message)
    };
    tonic::Status::new(code, message)
}

fn unexpected() -> tonic::Status {
    tonic::Status::internal("keymux: the router gave an unexpected answer")
}

#[tonic::async_trait]
impl KeyManagementService for KmsPlugin {
    async fn status(
        &self,
        request: GrpcRequest<StatusRequest>,
    ) -> Result<Response<StatusResponse>, tonic::Status> {
        let peer = peer_of(&request)?;
        let health =
            self.status.health(&self.door, &peer, &self.key, self.options(), self.status_cache_ttl).await;
        Ok(Response::new(StatusResponse {
            version: "v2".into(),
            healthz: health.healthz,
            key_id: health.key_id,
        }))
    }

    async fn encrypt(
        &self,
        mut request: GrpcRequest<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, tonic::Status> {
        let peer = peer_of(&request)?;
        // Moved, not copied: the only copy keymux keeps is zeroized on drop.
        let plaintext = SecretBytes::new(std::mem::take(&mut request.get_mut().plaintext));
        let wrap = Request::Wrap { key: self.key.clone(), aad: AAD.to_vec(), plaintext };
        let blob = match self.door.call(&peer, wrap, self.options()).await {
            Ok(Reply::Wrap { blob }) => blob,
            Ok(_) => return Err(unexpected()),
            Err(failure) => return Err(grpc_status(&failure)),
        };
        let (header, _) = BlobHeader::parse(&blob).map_err(|_| unexpected())?;
        Ok(Response::new(EncryptResponse {
            key_id: metadata::key_id(&header.key, header.version),
            annotations: metadata::annotations(&header),
            ciphertext: blob,
        }))
    }

    async fn decrypt(
        &self,
        mut request: GrpcRequest<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, tonic::Status> {
        let peer = peer_of(&request)?;
        let message = request.get_mut();
        let blob = std::mem::take(&mut message.ciphertext);
        let Ok((header, _)) = BlobHeader::parse(&blob) else {
            return Err(tonic::Status::invalid_argument("keymux: the ciphertext is not a keymux ciphertext"));
        };
        // Any enabled version unwraps, whatever key id the request names: the blob's own
        // authenticated header says which version wrapped it.
        metadata::check(&message.annotations, &header)
            .map_err(|error| tonic::Status::invalid_argument(format!("keymux: {error}")))?;
        let unwrap = Request::Unwrap { aad: AAD.to_vec(), blob };
        match self.door.call(&peer, unwrap, self.options()).await {
            Ok(Reply::Unwrap { plaintext }) => {
                Ok(Response::new(DecryptResponse { plaintext: plaintext.expose().to_vec() }))
            }
            Ok(_) => Err(unexpected()),
            Err(failure) => Err(grpc_status(&failure)),
        }
    }
}
