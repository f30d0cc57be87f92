//! TLS server configuration: the operator's certificate, or a self-signed one generated
//! into the data directory on first start so TLS works out of the box.
//!
//! rustls logs through `log`; `main.rs` keeps it at error level, since its warnings are
//! about clients (liblinphone sends an IP address as SNI, which rustls ignores and warns of).

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Builds the acceptor from `cert`/`key` PEM files, or from `data_dir/tls/` (generated
/// there when missing) when neither is given.
pub fn acceptor(cert: Option<&Path>, key: Option<&Path>, data_dir: &Path, domain: &str) -> anyhow::Result<TlsAcceptor> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        (None, None) => self_signed(data_dir, domain)?,
        _ => anyhow::bail!("tls.cert_file and tls.key_file must be set together"),
    };
    let certs = load_certs(&cert)?;
    let key = load_key(&key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Paths of the generated certificate, creating it on first use.
fn self_signed(data_dir: &Path, domain: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let names = vec![domain.to_string(), "localhost".to_string()];
    let generated = rcgen::generate_simple_self_signed(names).context("generating a certificate")?;
    crate::private_file::write(&key, generated.key_pair.serialize_pem().as_bytes(), crate::private_file::Existing::Replace)?;
    std::fs::write(&cert, generated.cert.pem()).with_context(|| format!("cannot write {}", cert.display()))?;
    tracing::info!("generated a self-signed TLS certificate in {}", dir.display());
    Ok((cert, key))
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", path.display());
    Ok(certs)
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())?
        .with_context(|| format!("no private key in {}", path.display()))
}
