//! TLS for the API: a certificate from the configuration, or one the engine issues itself
//! from its own CA (generated once with rcgen and kept under `<state_dir>/tls`). Clients —
//! the CLI, and later the agents through the fingerprint on their command line — trust that
//! CA.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

const CA_NAME: &str = "Rivet engine CA";

/// Why the API cannot get its certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no usable {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The server's TLS configuration and what clients need to trust it.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub server: Arc<rustls::ServerConfig>,
    /// The PEM clients should trust: the engine's CA, or the configured certificate.
    pub trust_pem: String,
    /// Where that PEM is on disk.
    pub trust_path: PathBuf,
    /// SHA-256 of the trusted certificate, `AA:BB:…`, for agents' command lines.
    pub fingerprint: String,
}

impl TlsMaterial {
    /// Loads the configured certificate and key.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain = parse_chain(cert, &cert_pem)?;
        let key_der =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::Pem {
                path: key.to_owned(),
                what: "private key",
            })?;
        let fingerprint = fingerprint(&chain[0]);
        Ok(Self {
            server: server_config(chain, key_der)?,
            trust_pem: cert_pem,
            trust_path: cert.to_owned(),
            fingerprint,
        })
    }

    /// Issues a server certificate for `names` from the engine's CA in `dir`, creating the
    /// CA on first use.
    pub fn issue(dir: &Path, names: &[String]) -> Result<Self, TlsError> {
        fs::create_dir_all(dir).map_err(|source| TlsError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        let ca_params = ca_params();
        let key = if ca_cert.exists() && ca_key.exists() {
            KeyPair::from_pem(&read(&ca_key)?)?
        } else {
            let key = KeyPair::generate()?;
            let cert = ca_params.self_signed(&key)?;
            write_private(&ca_key, &key.serialize_pem())?;
            fs::write(&ca_cert, cert.pem()).map_err(|source| TlsError::Write {
                path: ca_cert.clone(),
                source,
            })?;
            tracing::info!(path = %ca_cert.display(), "created the engine's certificate authority");
            key
        };
        let trust_pem = read(&ca_cert)?;
        let ca_der = parse_chain(&ca_cert, &trust_pem)?.remove(0);
        // The issuer is rebuilt from the same name and key: the server certificate then
        // names the stored CA as its issuer without parsing it back.
        let issuer = Issuer::new(ca_params, key);
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "Rivet engine API");
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let server_key = KeyPair::generate()?;
        let server_cert = params.signed_by(&server_key, &issuer)?;
        let key_der =
            PrivateKeyDer::try_from(server_key.serialize_der()).map_err(|_| TlsError::Pem {
                path: dir.to_owned(),
                what: "generated key",
            })?;
        let chain = vec![server_cert.der().clone(), ca_der.clone()];
        Ok(Self {
            server: server_config(chain, key_der)?,
            trust_pem,
            trust_path: ca_cert,
            fingerprint: fingerprint(&ca_der),
        })
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The names a generated certificate carries: loopback, the listen address, and any
/// configured host names.
pub fn certificate_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    for name in extra {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn parse_chain(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(chain)
}

/// `AA:BB:…` SHA-256 of a certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes a secret file readable by its owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<(), TlsError> {
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    };
    write().map_err(|source| TlsError::Write {
        path: path.to_owned(),
        source,
    })
}
