//! The Kubernetes KMS v2 plugin: kube-apiserver's envelope encryption of Secrets (and
//! any other resource) at rest, with the key-encryption key behind keymux.
//!
//! gRPC (service `v2.KeyManagementService`, from `proxy/proto/kubernetes_kms_v2.proto`)
//! over a Unix socket that only the proxy's user, or a configured group, may connect to.
//! Each connection's identity is its Unix peer uid ([`Identity::unix`]), so `[[acl]]`
//! rules with `uid = N` decide what the API server may do, as for any other client.
//!
//! - `Encrypt` is a WRAP under the configured key's current version; the answer's key
//!   id names that version (`keymux:<key>:v<N>`) and one annotation repeats it.
//! - `Decrypt` checks the annotation against the ciphertext, then UNWRAPs it: any
//!   enabled version of the key, whatever key id the request names.
//! - `Status` is a real wrap-and-unwrap through the backend, cached briefly.
//!
//! [`Identity::unix`]: crate::access::identity::Identity::unix

mod config;
pub mod metadata;
mod service;
mod socket;
mod status;

use std::io;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::KubernetesKmsConfig;

use crate::frontend::FrontDoor;

/// The generated gRPC messages and server trait.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("v2");
}

/// Binds the plugin socket now (so a bad path fails start-up) and serves it on `tasks`
/// until `shutdown` is cancelled; the socket file is removed when serving ends.
pub fn spawn(
    config: &KubernetesKmsConfig,
    door: FrontDoor,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let socket = socket::PluginSocket::bind(&config.socket, config.socket_group)?;
    let max_message = usize::try_from(config.max_message_size.as_u64()).unwrap_or(usize::MAX);
    let plugin = service::KmsPlugin {
        door: door.clone(),
        key: config.key.clone(),
        request_timeout: config.request_timeout,
        status_cache_ttl: config.status_cache_ttl,
        status: status::StatusCache::default(),
    };
    let service = proto::key_management_service_server::KeyManagementServiceServer::new(plugin)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .add_service(service);
    let path = config.socket.display().to_string();
    tasks.spawn(async move {
        let incoming = socket.incoming(door);
        if let Err(error) = server.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()).await {
            tracing::error!(%error, socket = path, "kubernetes_kms: the plugin server stopped");
        }
    });
    Ok(())
}
