//! [`PostgresTls`] made into a connector for tokio-postgres (rustls,
//! through tokio-postgres-rustls: the maintained glue between the two).

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls_platform_verifier::BuilderVerifierExt;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::PostgresTls;
use crate::error::{Error, Result};

/// The connector for `tls`, or `None` for plain connections. Bad settings
/// (a PEM without certificates, say) are [`Error::InvalidInput`].
pub(super) fn connector(tls: &PostgresTls) -> Result<Option<MakeRustlsConnect>> {
    let invalid = |e: rustls::Error| Error::invalid("tls", e.to_string());
    // An explicit provider: the process-wide default may be unset, or
    // ambiguous when several are compiled in.
    let builder = || {
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(invalid)
    };
    let config = match tls {
        PostgresTls::Disabled => return Ok(None),
        PostgresTls::PlatformRoots => builder()?
            .with_platform_verifier()
            .map_err(invalid)?
            .with_no_client_auth(),
        PostgresTls::RootsPem(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert
                    .map_err(|e| Error::invalid("tls", format!("the PEM does not parse: {e}")))?;
                roots.add(cert).map_err(invalid)?;
            }
            if roots.is_empty() {
                return Err(Error::invalid("tls", "the PEM holds no CERTIFICATE block"));
            }
            builder()?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_is_refused() {
        for pem in [
            &b""[..],
            b"not a pem",
            b"-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        ] {
            match connector(&PostgresTls::RootsPem(pem.to_vec())) {
                Err(err) => assert!(err.is_invalid_input(), "{err:?}"),
                Ok(_) => panic!("accepted a PEM without certificates: {pem:?}"),
            }
        }
    }

    #[test]
    fn disabled_is_plain_and_platform_roots_build() {
        assert!(connector(&PostgresTls::Disabled).unwrap().is_none());
        assert!(connector(&PostgresTls::PlatformRoots).unwrap().is_some());
    }
}
