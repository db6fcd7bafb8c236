//! How connections are made: plain, or TLS with rustls (feature `tls`) when root certificates are given.

use techhub_core::storage::{StoreError, StoreResult};

use crate::PostgresOptions;

/// The connector every connection (pooled, or the listener) is made with.
#[derive(Clone)]
pub(crate) enum Connector {
    /// No TLS: the URL's `sslmode` must not require it.
    Plain(tokio_postgres::NoTls),
    /// TLS with rustls, verifying the server against the configured roots.
    #[cfg(feature = "tls")]
    Rustls(Box<tokio_postgres_rustls::MakeRustlsConnect>),
}

impl Connector {
    /// TLS when the options name root certificates (and the feature is on), else plain.
    pub(crate) fn for_options(options: &PostgresOptions) -> StoreResult<Self> {
        #[cfg(feature = "tls")]
        if let Some(path) = &options.tls_root_certificates {
            return rustls_connector(path).map(|tls| Self::Rustls(Box::new(tls)));
        }
        let _ = options;
        Ok(Self::Plain(tokio_postgres::NoTls))
    }
}

#[cfg(feature = "tls")]
fn rustls_connector(path: &std::path::Path) -> StoreResult<tokio_postgres_rustls::MakeRustlsConnect> {
    use std::sync::Arc;

    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let unusable = |why: String| StoreError::InvalidInput(format!("TLS root certificates {}: {why}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(path).map_err(|error| unusable(error.to_string()))? {
        let certificate = certificate.map_err(|error| unusable(error.to_string()))?;
        roots.add(certificate).map_err(|error| unusable(error.to_string()))?;
    }
    if roots.is_empty() {
        return Err(unusable("the file holds no certificate".to_owned()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(StoreError::backend)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
