//! The one place tests make certificates: a CA, server certificates for `localhost`,
//! and client certificates (good, expired, or from another CA), written as PEM files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use keymux_client::{Client, ClientConfig, Endpoint, TlsConfig as ClientTls};
use keymux_proxy::config::{ClientAuth, Config, QuicConfig, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tempfile::TempDir;

/// A test CA and a directory for the files it issues.
pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: TempDir,
    serial: AtomicUsize,
}

/// An issued certificate and its key, as PEM.
#[derive(Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

/// Who a client certificate names.
#[derive(Default)]
pub struct Subject<'a> {
    /// The common name.
    pub cn: &'a str,
    /// The organisational unit, if any.
    pub ou: Option<&'a str>,
    /// A URI subject alternative name (a SPIFFE id, say), if any.
    pub uri: Option<&'a str>,
    /// Valid only in 2020, so expired now.
    pub expired: bool,
}

impl Pki {
    /// A fresh CA called `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { ca, dir: tempfile::tempdir().unwrap(), serial: AtomicUsize::new(0) }
    }

    /// The CA certificate, as PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// The CA certificate as a PEM file in the directory, written on first use.
    pub fn ca_path(&self) -> PathBuf {
        let path = self.dir.path().join("ca.pem");
        if !path.exists() {
            std::fs::write(&path, self.ca_pem()).unwrap();
        }
        path
    }

    /// A server certificate for `localhost` and 127.0.0.1 whose CN is `cn`.
    pub fn server(&self, cn: &str) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// A client certificate for `subject`.
    pub fn client(&self, subject: Subject<'_>) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, subject.cn);
        if let Some(ou) = subject.ou {
            params.distinguished_name.push(DnType::OrganizationalUnitName, ou);
        }
        if let Some(uri) = subject.uri {
            params.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if subject.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.issue(params)
    }

    /// A client certificate with just a common name.
    pub fn client_cn(&self, cn: &str) -> Issued {
        self.client(Subject { cn, ..Subject::default() })
    }

    fn issue(&self, params: CertificateParams) -> Issued {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// Writes `issued` into the directory as `<name>.pem` and `<name>.key`.
    pub fn write(&self, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
        write_pair(self.dir.path(), name, issued)
    }

    /// A `[tls]` section serving a fresh server certificate on an ephemeral port, with
    /// this CA as the client CA and client certificates as `client_auth` says.
    pub fn server_config(&self, client_auth: ClientAuth) -> TlsConfig {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let (cert, key) = self.write(&format!("server{n}"), &self.server("keymux test server"));
        TlsConfig {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            cert,
            key,
            client_ca: Some(self.ca_path()),
            client_auth: Some(client_auth),
            reload_interval: std::time::Duration::from_secs(10),
        }
    }

    /// Adds TLS (client certificates required) and QUIC listeners to `config`.
    pub fn enable(&self, config: &mut Config) {
        config.tls = Some(self.server_config(ClientAuth::Required));
        config.quic = Some(QuicConfig { listen: "127.0.0.1:0".parse().unwrap(), ..QuicConfig::default() });
    }

    /// Client TLS settings trusting this CA, presenting `client` if given.
    pub fn client_tls(&self, client: Option<&Issued>) -> ClientTls {
        let tls = ClientTls::from_ca_pem(self.ca_pem().as_bytes()).unwrap();
        match client {
            Some(issued) => {
                tls.with_client_cert_pem(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes()).unwrap()
            }
            None => tls,
        }
    }
}

fn write_pair(dir: &Path, name: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    (cert, key)
}

/// An SDK client for `endpoint` with `tls`, a short connect timeout and no retries, so
/// refusals show at once.
pub async fn sdk_client(
    endpoint: Endpoint,
    tls: ClientTls,
    connections: usize,
) -> keymux_client::Result<Client> {
    let mut config = ClientConfig::new(vec![endpoint]);
    config.tls = Some(tls);
    config.connections = connections;
    config.connect_timeout = std::time::Duration::from_secs(5);
    config.max_retries = 0;
    Client::connect(config).await
}

/// A raw rustls client connection (for what the SDK will not do: TLS 1.2, looking at
/// the server's certificate). Ends with a PING round trip, so a refused client
/// certificate (which TLS 1.3 reports only after the handshake) shows as an error.
pub async fn raw_tls(
    addr: std::net::SocketAddr,
    pki: &Pki,
    client: Option<&Issued>,
    version: &'static rustls::SupportedProtocolVersion,
) -> std::io::Result<rustls_pki_types::CertificateDer<'static>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let config = rustls_client(pki, client, version);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let mut stream = connector.connect("localhost".try_into().unwrap(), tcp).await?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned();
    let ping = crate::raw::raw_frame(1, 0x10, 0, 7, &[]);
    stream.write_all(&ping).await?;
    let mut response = [0u8; 4 + 12 + 2];
    tokio::time::timeout(std::time::Duration::from_secs(5), stream.read_exact(&mut response))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no PING response"))??;
    Ok(leaf)
}

/// A rustls client configuration trusting `pki`, presenting `client` if given, in TLS
/// `version` only.
pub fn rustls_client(
    pki: &Pki,
    client: Option<&Issued>,
    version: &'static rustls::SupportedProtocolVersion,
) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(pki.ca_pem().as_bytes()).unwrap()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(keymux_proxy::transport::tls::provider())
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots);
    match client {
        Some(issued) => builder
            .with_client_auth_cert(
                rustls_pki_types::CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                rustls_pki_types::PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// The DER of the first certificate in a PEM string.
pub fn der_of(pem: &str) -> rustls_pki_types::CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}
