//! What both TLS examples (`tls.rs` on tokio, `tls_smol.rs` on smol) set up alike: the
//! certificates (a CA, the server's for "localhost", the client's, generated with rcgen),
//! the rustls configurations of both sides (client certificates required), and the SHA-256
//! fingerprint that names a client. Included by each with `#[path]`; not an example itself.

use std::error::Error;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The examples' error type.
pub(crate) type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

/// A certificate and its private key (PKCS#8 DER).
struct Issued {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl Issued {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()))
    }
}

/// A certificate the CA `ca` issued for `name` (for `usage`).
fn issue(ca: &(rcgen::Certificate, KeyPair), name: &str, usage: ExtendedKeyUsagePurpose) -> Result<Issued> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &ca.0, &ca.1)?;
    Ok(Issued { cert: cert.der().clone(), key: key.serialize_der() })
}

/// rustls on *ring* (nothing but a C compiler needed to build it; rustls 0.23.48 deprecates
/// it for lacking post-quantum key exchange).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration (its certificate for "localhost"; client certificates of
/// the CA required) and the client's (trusting the CA, presenting its certificate).
pub(crate) fn configs() -> Result<(ServerConfig, ClientConfig)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "example CA");
    let ca = (ca_params.self_signed(&ca_key)?, ca_key);
    let server_cert = issue(&ca, "localhost", ExtendedKeyUsagePurpose::ServerAuth)?;
    let client_cert = issue(&ca, "client", ExtendedKeyUsagePurpose::ClientAuth)?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.0.der().clone())?;
    let roots = Arc::new(roots);

    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider()).build()?;
    let server = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server_cert.cert.clone()], server_cert.key())?;
    let client = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![client_cert.cert.clone()], client_cert.key())?;
    Ok((server, client))
}

/// The SHA-256 fingerprint of a link's client certificate, which names the peer.
pub(crate) fn fingerprint(certs: Option<&[CertificateDer<'static>]>) -> Option<Vec<u8>> {
    let cert = certs?.first()?;
    Some(ring::digest::digest(&ring::digest::SHA256, cert.as_ref()).as_ref().to_vec())
}

/// `bytes` in hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
