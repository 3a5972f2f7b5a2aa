//! Kubernetes KMS v2 requests as the plugin socket receives them: the protobuf decodes
//! or is refused, and a decrypt request's annotations are parsed and checked against
//! its ciphertext's blob header, never panicking. The first byte picks the message.
#![no_main]

use keymux_protocol::BlobHeader;
use keymux_proxy::frontend::kubernetes::metadata;
use keymux_proxy::frontend::kubernetes::proto::{DecryptRequest, EncryptRequest, StatusRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    match selector % 3 {
        0 => {
            if let Ok(request) = DecryptRequest::decode(body) {
                let _ = metadata::parse(&request.annotations);
                if let Ok((header, _)) = BlobHeader::parse(&request.ciphertext) {
                    let _ = metadata::check(&request.annotations, &header);
                }
            }
        }
        1 => {
            let _ = EncryptRequest::decode(body);
        }
        _ => {
            let _ = StatusRequest::decode(body);
        }
    }
});
