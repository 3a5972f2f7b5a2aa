//! Seal and open a message with envelope encryption through a running proxy.
//!
//! ```text
//! cargo run -p keymux-client --example envelope -- tcp://127.0.0.1:7450 default
//! ```

use keymux_client::{Client, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let endpoint = args.next().unwrap_or_else(|| "tcp://127.0.0.1:7450".to_owned());
    let key = args.next().unwrap_or_else(|| "default".to_owned());

    let client = Client::connect_to(&endpoint).await?;
    let info = client.server_info();
    println!("connected to keymux {} (max_in_flight {})", info.server_version, info.max_in_flight);

    let aad = b"example=envelope";
    let envelope = client.seal(&key, aad, b"attack at dawn").await?;
    println!("sealed 14 bytes into a {}-byte envelope", envelope.len());
    let opened = client.open(aad, &envelope).await?;
    println!("opened: {}", String::from_utf8_lossy(&opened));

    match client.open(b"example=other", &envelope).await {
        Err(Error::Integrity { .. }) => println!("a different aad is refused, as it should be"),
        other => println!("unexpected: {other:?}"),
    }
    Ok(())
}
