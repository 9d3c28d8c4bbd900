//! TLS as libpq's `sslmode` asks, on rustls (`tokio-postgres-rustls`):
//! - `disable`: none; `prefer` (the default): TLS when the server offers it; `require`: TLS
//!   or no connection. Neither checks the certificate, unless a root certificate is given
//!   (or `~/.postgresql/root.crt` exists): then, as in libpq, the chain is checked.
//! - `verify-ca`: the server's certificate must chain to a root of `sslrootcert`;
//!   `verify-full`: and be valid for the host name connected to. `sslrootcert=system` trusts
//!   the system's roots (and, as in libpq, checks the host name).
//! - `sslcert` + `sslkey` (default `~/.postgresql/postgresql.crt` / `.key` when both exist):
//!   the client certificate offered to servers that ask for one.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_postgres::config::SslMode;

/// What the server's certificate is checked for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// The TLS settings of one connection string.
pub(super) struct Tls {
    pub mode: SslMode,
    pub config: ClientConfig,
}

/// `sslmode` and the certificate options, read as libpq reads them.
pub(super) fn tls(
    sslmode: Option<&str>,
    sslrootcert: Option<&str>,
    sslcert: Option<&str>,
    sslkey: Option<&str>,
) -> Result<Tls, String> {
    let home_file = |name: &str| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql").join(name))
    };
    let system_roots_asked = sslrootcert == Some("system");
    // As in libpq (16+): the system's roots mean the host name is checked too.
    let sslmode = sslmode.unwrap_or(if system_roots_asked {
        "verify-full"
    } else {
        "prefer"
    });
    let (mode, asked) = match sslmode {
        "disable" => (SslMode::Disable, Check::Nothing),
        "prefer" => (SslMode::Prefer, Check::Nothing),
        "require" => (SslMode::Require, Check::Nothing),
        "verify-ca" => (SslMode::Require, Check::Chain),
        "verify-full" => (SslMode::Require, Check::ChainAndName),
        "allow" => {
            return Err(
                "sslmode=allow is not supported (it tries without TLS first): use prefer, \
                 require or disable"
                    .into(),
            )
        }
        other => {
            return Err(format!(
                "invalid sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            ))
        }
    };
    if system_roots_asked && asked != Check::ChainAndName {
        return Err(format!(
            "sslrootcert=system checks the host name: use sslmode=verify-full, not {sslmode}"
        ));
    }
    let provider = Arc::new(ring::default_provider());
    let any_certificate = || -> Arc<dyn ServerCertVerifier> {
        Arc::new(AnyCertificate(provider.signature_verification_algorithms))
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous();
    if mode == SslMode::Disable {
        // Never used: no file is read for it.
        return Ok(Tls {
            mode,
            config: builder
                .with_custom_certificate_verifier(any_certificate())
                .with_no_client_auth(),
        });
    }
    let root = match sslrootcert {
        Some(path) => Some(PathBuf::from(path)),
        None => home_file("root.crt").filter(|default| default.exists() || asked != Check::Nothing),
    };
    let verifier = match (asked, root) {
        (Check::Nothing, None) => any_certificate(),
        (_, None) => {
            return Err(format!(
                "sslmode={sslmode} needs the root certificate that signed the server's: \
                 give sslrootcert=FILE, or sslrootcert=system for the system's trusted roots"
            ))
        }
        (_, Some(_)) if system_roots_asked => {
            let roots = system_roots()?;
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("sslrootcert=system: {e}"))?;
            verifier as Arc<dyn ServerCertVerifier>
        }
        (asked, Some(root)) => {
            let roots = roots_of(&root, sslmode)?;
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("root certificate file {}: {e}", root.display()))?;
            if asked == Check::ChainAndName {
                webpki as Arc<dyn ServerCertVerifier>
            } else {
                // prefer and require check the chain when given a root, as verify-ca does.
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = builder.with_custom_certificate_verifier(verifier);
    // libpq's client certificate: sslcert (default ~/.postgresql/postgresql.crt) when the file
    // is there, with its key, sslkey (default ~/.postgresql/postgresql.key).
    let cert = match sslcert {
        Some(path) => Some(PathBuf::from(path)),
        None => home_file("postgresql.crt").filter(|default| default.exists()),
    };
    let mut config = match cert {
        Some(cert) => {
            let key = sslkey
                .map(PathBuf::from)
                .or_else(|| home_file("postgresql.key"))
                .ok_or("a client certificate needs its key: give sslkey=FILE")?;
            builder
                .with_client_auth_cert(certificates_of(&cert)?, private_key_of(&key)?)
                .map_err(|e| format!("client certificate {}: {e}", cert.display()))?
        }
        None => builder.with_no_client_auth(),
    };
    // The protocol name PostgreSQL 17+ expects, and needs with sslnegotiation=direct.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Tls { mode, config })
}

fn certificates_of(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificate file {}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "certificate file {} holds no certificate",
            path.display()
        ));
    }
    Ok(certificates)
}

fn roots_of(path: &Path, sslmode: &str) -> Result<RootCertStore, String> {
    if !path.exists() {
        let unchecked = if sslmode.starts_with("verify-") {
            ", or sslmode=require to connect without checking the server's certificate"
        } else {
            ""
        };
        return Err(format!(
            "root certificate file {} does not exist: give sslrootcert=FILE (the CA that signed \
             the server's certificate) or sslrootcert=system{unchecked}",
            path.display()
        ));
    }
    let mut roots = RootCertStore::empty();
    for certificate in certificates_of(path)? {
        roots
            .add(certificate)
            .map_err(|e| format!("root certificate file {}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if roots.is_empty() {
        return Err("sslrootcert=system: this system has no trusted root certificates".into());
    }
    Ok(roots)
}

/// The client's private key; refused, as libpq does, when others may read it.
fn private_key_of(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let metadata = std::fs::metadata(path)
        .map_err(|e| format!("cannot read private key file {}: {e}", path.display()))?;
    // root may own a key its group (the server's, say) reads; anyone else's is theirs alone.
    let others = if metadata.uid() == 0 { 0o037 } else { 0o077 };
    if metadata.permissions().mode() & others != 0 {
        return Err(format!(
            "private key file {} has group or world access; permissions should be u=rw (0600) \
             or less",
            path.display()
        ));
    }
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("cannot read private key file {}: {e}", path.display()))
}

/// `prefer`/`require` without a root certificate: any certificate, as libpq takes it (the
/// handshake's signatures are still checked, so the server holds the certificate's key).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain to a trusted root, whatever names the certificate carries.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            outcome => outcome,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_read_as_libpq_reads_them() {
        let mode = |sslmode| tls(Some(sslmode), None, None, None).map(|t| t.mode);
        assert_eq!(mode("disable"), Ok(SslMode::Disable));
        assert_eq!(mode("prefer"), Ok(SslMode::Prefer));
        assert_eq!(mode("require"), Ok(SslMode::Require));
        assert!(mode("allow").unwrap_err().contains("not supported"));
        assert!(mode("verify_full").unwrap_err().contains("invalid sslmode"));
        let missing = tls(Some("verify-full"), Some("/nonexistent/ca.crt"), None, None);
        assert!(missing
            .err()
            .unwrap()
            .contains("/nonexistent/ca.crt does not exist"));
        let missing_cert = tls(None, None, Some("/nonexistent/c.crt"), None);
        assert!(missing_cert.err().unwrap().contains("/nonexistent/c.crt"));
        // disable reads no file, however wrong the others are.
        assert_eq!(mode("disable"), Ok(SslMode::Disable));
        let disabled = tls(
            Some("disable"),
            Some("/nonexistent/ca.crt"),
            Some("/nonexistent/c.crt"),
            None,
        );
        assert!(disabled.is_ok());
        let system = |sslmode| tls(sslmode, Some("system"), None, None).err();
        assert!(system(Some("require"))
            .unwrap()
            .contains("use sslmode=verify-full"));
        // Unset, it means verify-full (whether this machine has system roots or not).
        assert!(!system(None).is_some_and(|e| e.contains("use sslmode")));
    }

    #[test]
    fn a_private_key_others_may_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("soniq-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("client.key");
        std::fs::write(&key, "not a key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = private_key_of(&key).err().unwrap();
        assert!(refused.contains("group or world access"), "{refused}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let unreadable = private_key_of(&key).err().unwrap();
        assert!(
            unreadable.contains("cannot read private key file"),
            "{unreadable}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
