//! Sign a message through a running proxy, verify it there and locally, and write the
//! message, the signature and the DER public key for `openssl` to check.
//!
//! ```text
//! keymux key create sig --type ed25519
//! cargo run -p keymux-client --example sign -- tcp://127.0.0.1:7450 sig
//! openssl pkeyutl -verify -pubin -keyform DER -rawin -inkey pub.der -in msg -sigfile sig
//! ```

use keymux_client::{Client, Error};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://127.0.0.1:7450".to_owned());
    let key = args.next().unwrap_or_else(|| "sig".to_owned());

    let client = Client::connect_to(&endpoint).await?;
    let message = b"hello from keymux";
    let signature = match client.sign(&key, message).await {
        Err(Error::BadRequest { message }) => {
            let hint = "make one with `keymux key create sig --type ed25519`";
            return Err(format!("{key:?} is not a signing key ({message}); {hint}").into());
        }
        other => other?,
    };
    println!(
        "{key} version {} signed {} bytes: {} byte signature",
        signature.version,
        message.len(),
        signature.bytes.len()
    );

    let valid = client.verify(&key, signature.version, message, &signature.bytes).await?;
    println!("the proxy says the signature is {}", if valid { "valid" } else { "INVALID" });

    let public_key = client.public_key(&key, signature.version).await?;
    let local = public_key.verify_locally(message, &signature.bytes)?;
    println!("verified locally ({}): {}", public_key.algorithm(), if local { "valid" } else { "INVALID" });

    std::fs::write("msg", message)?;
    std::fs::write("sig", &signature.bytes)?;
    std::fs::write("pub.der", public_key.spki_der())?;
    println!("wrote msg, sig and pub.der");
    Ok(())
}
