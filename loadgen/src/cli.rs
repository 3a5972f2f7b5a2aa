//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use keymux_client::{Endpoint, TlsConfig};
use keymux_proxy::keys::KeyType;

use crate::scenario::{Driver, Scenario};
use crate::workload::{Mix, Op};

/// Load generator for keymux: closed loop (`connections × pipeline` requests in flight)
/// or open loop (`--rate`, coordinated-omission corrected); reports throughput and HDR
/// latency percentiles.
#[derive(Debug, Clone, Parser)]
#[command(name = "keymux-loadgen", version, about)]
pub struct Cli {
    /// Proxy to load: tcp://host:port, tls://host:port, quic://host:port or unix:///path.
    #[arg(long, default_value = "tcp://127.0.0.1:7450", conflicts_with = "embedded")]
    pub target: Endpoint,
    /// Start a keymux proxy in this process on the development soft keystore (with the
    /// `--keys` keys of the run's operations, of `--key-type` and `--sign-key-type`) and
    /// load it.
    #[arg(long)]
    pub embedded: bool,
    /// Open loop: requests per second, issued whatever the answers do; latencies run
    /// from each request's intended send time. Without it: closed loop.
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,
    /// Open loop: most requests in flight before the generator itself waits.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Connections (one client each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,
    /// Concurrent requests per connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub pipeline: u32,
    /// Closed loop: `sdk` goes through the client SDK, as applications do; `raw` writes
    /// frames straight to the socket (tcp and unix), so the generator costs little.
    #[arg(long, value_enum, default_value_t = Driver::Sdk)]
    pub driver: Driver,
    /// How long to measure, e.g. 10s, 1m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Operation to perform.
    #[arg(long, value_enum, default_value_t = Op::Wrap)]
    pub op: Op,
    /// For `--op mix`: weights, e.g. wrap=50,unwrap=40,generate-data-key=10 or
    /// wrap=1,sign=1.
    #[arg(long, default_value = "wrap=1,unwrap=1")]
    pub mix: Mix,
    /// Key of wrap, unwrap, generate-data-key and rewrap, or with `--keys N` the prefix
    /// of the names `{key}-0` .. `{key}-{N-1}`.
    #[arg(long, default_value = "default")]
    pub key: String,
    /// With --embedded: the type of the `--key` keys (the signing keys' is
    /// `--sign-key-type`).
    #[arg(long, default_value = "aes-256", requires = "embedded", value_parser = key_type_of(KeyType::is_wrapping))]
    pub key_type: KeyType,
    /// Key of sign and verify, or with `--keys N` the prefix of the names
    /// `{sign-key}-0` .. `{sign-key}-{N-1}`.
    #[arg(long, default_value = "signing")]
    pub sign_key: String,
    /// With --embedded: the type of the `--sign-key` keys.
    #[arg(long, default_value = "ed25519", requires = "embedded", value_parser = key_type_of(KeyType::is_signing))]
    pub sign_key_type: KeyType,
    /// Bytes of the message that sign signs and verify checks the signature over.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub message_size: u16,
    /// How many keys (of each kind, wrapping and signing) to spread requests over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub keys: u32,
    /// Zipf exponent of the key distribution (0: uniform); key 0 is the hottest.
    #[arg(long, default_value_t = 0.0)]
    pub zipf: f64,
    /// Data key size in bytes (wrap, generate-data-key, and the blobs for unwrap/rewrap).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub dek_size: u16,
    /// For unwrap/rewrap: distinct blobs to make first and cycle through.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub blobs: u32,
    /// For unwrap/rewrap: ask the proxy to bypass its unwrap cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Deadline of each request.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Client retries on retryable failures (0: count every BUSY/TIMEOUT as an error).
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write the latency histogram as an HdrHistogram log to this file.
    #[arg(long, value_name = "FILE")]
    pub hdr: Option<PathBuf>,
    /// Also plot latency by percentile to this file, *.svg or *.png (either needs a
    /// TrueType font: Debian's fonts-dejavu-core, or $KEYMUX_PLOT_FONT).
    #[arg(long, value_name = "FILE.svg|FILE.png")]
    pub plot: Option<PathBuf>,
    /// For tls:// and quic:// targets: PEM file with the CA that signed the proxy's
    /// certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key_file: Option<PathBuf>,
    /// Verify this name in the proxy's certificate instead of the target's host.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
}

impl Cli {
    /// The TLS settings of `--ca`, `--cert`, `--key-file` and `--server-name`, if any.
    pub fn tls(&self) -> anyhow::Result<Option<TlsConfig>> {
        let Some(ca) = &self.ca else {
            anyhow::ensure!(self.cert.is_none(), "--cert needs --ca");
            return Ok(None);
        };
        let mut tls = TlsConfig::from_ca_file(ca)?;
        if let (Some(cert), Some(key)) = (&self.cert, &self.key_file) {
            tls = tls.with_client_cert_files(cert, key)?;
        }
        if let Some(name) = &self.server_name {
            tls = tls.with_server_name(name);
        }
        Ok(Some(tls))
    }

    /// The scenario these arguments describe, without TLS settings (see [`Cli::tls`]).
    pub fn scenario(&self) -> Scenario {
        Scenario {
            tls: None,
            target: self.target.clone(),
            connections: self.connections as usize,
            pipeline: self.pipeline as usize,
            driver: self.driver,
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            max_in_flight: self.max_in_flight as usize,
            op: self.op,
            mix: self.mix.clone(),
            key: self.key.clone(),
            key_type: self.key_type,
            sign_key: self.sign_key.clone(),
            sign_key_type: self.sign_key_type,
            keys: self.keys as usize,
            zipf: self.zipf,
            dek_size: self.dek_size,
            blobs: self.blobs as usize,
            no_cache: self.no_cache,
            message_size: self.message_size,
            timeout: self.timeout,
            retries: self.retries,
        }
    }
}

/// A parser of the key type names that `kind` accepts, which `--help` lists.
fn key_type_of(kind: fn(KeyType) -> bool) -> impl TypedValueParser<Value = KeyType> {
    let names: Vec<&'static str> = KeyType::ALL.into_iter().filter(|t| kind(*t)).map(KeyType::name).collect();
    PossibleValuesParser::new(names).map(|name| name.parse::<KeyType>().expect("a listed key type name"))
}

fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err("a positive number of requests per second".into()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("keymux-loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_scenario_defaults() {
        let cli = parse(&[]).unwrap();
        let scenario = cli.scenario();
        let expected = Scenario::new("tcp://127.0.0.1:7450".parse().unwrap());
        assert_eq!(serde_json::to_value(&scenario).unwrap(), serde_json::to_value(&expected).unwrap());
        assert!(cli.json.is_none());
    }

    #[test]
    fn parses_every_option() {
        let cli = parse(&[
            "--target",
            "unix:///run/keymux.sock",
            "--connections",
            "8",
            "--pipeline",
            "64",
            "--duration",
            "1m 30s",
            "--warmup",
            "500ms",
            "--op",
            "generate-data-key",
            "--key",
            "payments",
            "--dek-size",
            "16",
            "--blobs",
            "10",
            "--no-cache",
            "--timeout",
            "250ms",
            "--retries",
            "2",
            "--json",
            "out.json",
            "--driver",
            "raw",
        ])
        .unwrap();
        let scenario = cli.scenario();
        assert_eq!(scenario.driver, Driver::Raw);
        assert_eq!(scenario.target, Endpoint::unix("/run/keymux.sock"));
        assert_eq!((scenario.connections, scenario.pipeline), (8, 64));
        assert_eq!(scenario.duration, Duration::from_secs(90));
        assert_eq!(scenario.warmup, Duration::from_millis(500));
        assert_eq!(scenario.op, Op::GenerateDataKey);
        assert_eq!((scenario.key.as_str(), scenario.dek_size, scenario.blobs), ("payments", 16, 10));
        assert!(scenario.no_cache);
        assert_eq!((scenario.timeout, scenario.retries), (Duration::from_millis(250), 2));
        assert_eq!(cli.json, Some(PathBuf::from("out.json")));
        for (name, op) in
            [("wrap", Op::Wrap), ("unwrap", Op::Unwrap), ("rewrap", Op::Rewrap), ("mix", Op::Mix)]
        {
            assert_eq!(parse(&["--op", name]).unwrap().op, op);
        }
    }

    #[test]
    fn parses_the_open_loop_mix_and_keys() {
        let cli = parse(&[
            "--embedded",
            "--rate",
            "10000",
            "--max-in-flight",
            "500",
            "--op",
            "mix",
            "--mix",
            "wrap=3,unwrap=1",
            "--keys",
            "100",
            "--zipf",
            "1.1",
        ])
        .unwrap();
        assert!(cli.embedded);
        let scenario = cli.scenario();
        assert_eq!((scenario.rate, scenario.max_in_flight), (Some(10_000.0), 500));
        assert_eq!(scenario.mix.0, vec![(Op::Wrap, 3), (Op::Unwrap, 1)]);
        assert_eq!((scenario.keys, scenario.zipf), (100, 1.1));
        assert_eq!(scenario.key_names()[99], "default-99");
        assert!(parse(&["--rate", "0"]).is_err());
        assert!(parse(&["--embedded", "--target", "tcp://x:1"]).is_err());
    }

    #[test]
    fn parses_sign_and_verify_and_their_keys() {
        let cli = parse(&[
            "--embedded",
            "--op",
            "verify",
            "--sign-key",
            "releases",
            "--sign-key-type",
            "ml-dsa-65",
            "--message-size",
            "1024",
            "--keys",
            "3",
        ])
        .unwrap();
        let scenario = cli.scenario();
        assert_eq!(scenario.op, Op::Verify);
        assert_eq!((scenario.sign_key.as_str(), scenario.sign_key_type), ("releases", KeyType::MlDsa65));
        assert_eq!(scenario.message_size, 1024);
        assert_eq!(scenario.sign_key_names(), ["releases-0", "releases-1", "releases-2"]);
        let expected: Vec<(String, KeyType)> =
            scenario.sign_key_names().into_iter().map(|name| (name, KeyType::MlDsa65)).collect();
        assert_eq!(scenario.embedded_keys(), expected, "only signing keys: no wrapping operation runs");
        assert_eq!(parse(&["--op", "sign"]).unwrap().op, Op::Sign);

        // A mix of both kinds: each kind's keys, of each kind's type.
        let cli = parse(&[
            "--embedded",
            "--op",
            "mix",
            "--mix",
            "wrap=1,sign=1",
            "--key",
            "pq",
            "--key-type",
            "ml-kem-768",
            "--sign-key-type",
            "ec-p384",
        ])
        .unwrap();
        let scenario = cli.scenario();
        assert_eq!(scenario.mix.0, vec![(Op::Wrap, 1), (Op::Sign, 1)]);
        assert_eq!(
            scenario.embedded_keys(),
            [("pq".to_owned(), KeyType::MlKem768), ("signing".to_owned(), KeyType::EcP384)]
        );
        scenario.validate().unwrap();

        // The defaults: aes-256 for the wrapping keys, ed25519 for the signing keys.
        let scenario = parse(&["--op", "sign"]).unwrap().scenario();
        assert_eq!((scenario.key_type, scenario.sign_key_type), (KeyType::Aes256, KeyType::Ed25519));
        assert_eq!(scenario.embedded_keys(), [("signing".to_owned(), KeyType::Ed25519)]);
    }

    #[test]
    fn key_types_belong_to_their_kind_and_to_embedded_runs() {
        let error = parse(&["--embedded", "--key-type", "ed25519"]).unwrap_err().to_string();
        assert!(error.contains("possible values: aes-256, ml-kem-768"), "{error}");
        let error = parse(&["--embedded", "--sign-key-type", "aes-256"]).unwrap_err().to_string();
        assert!(error.contains("ed25519"), "{error}");
        let error = parse(&["--sign-key-type", "ec-p256"]).unwrap_err().to_string();
        assert!(error.contains("--embedded"), "a key type means nothing without --embedded: {error}");
        assert!(parse(&["--message-size", "0"]).is_err());
    }

    #[test]
    fn tls_flags() {
        let cli = parse(&["--target", "quic://localhost:7443", "--ca", "/nonexistent/ca.pem"]).unwrap();
        assert_eq!(cli.scenario().target, Endpoint::quic("localhost", 7443));
        assert!(cli.tls().is_err(), "a missing CA file is an error");
        assert!(parse(&["--ca", "ca.pem", "--cert", "c.pem"]).is_err(), "--cert needs --key-file");
        assert!(parse(&[]).unwrap().tls().unwrap().is_none());
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--target", "127.0.0.1:7450"][..],
            &["--connections", "0"],
            &["--pipeline", "0"],
            &["--duration", "ten seconds"],
            &["--op", "encrypt"],
            &["--dek-size", "0"],
            &["--dek-size", "70000"],
            &["--mix", "wrap"],
            &["--mix", "wrap=1,sign"],
            &["--keys", "0"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should not parse");
        }
    }
}
