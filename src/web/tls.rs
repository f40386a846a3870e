//! HTTPS for the exporter's API: the certificate chain and key of `--web-tls-cert` and
//! `--web-tls-key` (PEM), loaded once at start into a rustls acceptor (ring provider,
//! HTTP/1.1 by ALPN).
//!
//! A bad file is a configuration error naming its flag; a key's content never appears in
//! an error. The handshake itself runs in `http::serve`, under the header timeout.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::web::Error;

const CERT_FLAG: &str = "--web-tls-cert";
const KEY_FLAG: &str = "--web-tls-key";

/// Loads the certificate chain and key and builds the acceptor.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| pem_error(CERT_FLAG, cert, "certificate", &e))?;
    if chain.is_empty() {
        return Err(pem_error(
            CERT_FLAG,
            cert,
            "certificate",
            &pem::Error::NoItemsFound,
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| pem_error(KEY_FLAG, key, "private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config {
            flag: CERT_FLAG,
            message: format!("TLS set-up failed: {e}"),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| match e {
            rustls::Error::InvalidCertificate(_) => Error::Config {
                flag: CERT_FLAG,
                message: format!("{}: unusable certificate: {e}", cert.display()),
            },
            _ => Error::Config {
                flag: KEY_FLAG,
                message: format!(
                    "{}: unusable private key, or not the key of {CERT_FLAG}",
                    key.display()
                ),
            },
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A PEM loading error, naming the flag and file but never quoting the file's content.
fn pem_error(flag: &'static str, path: &Path, what: &str, e: &pem::Error) -> Error {
    let message = match e {
        pem::Error::Io(io) => format!("cannot read {}: {io}", path.display()),
        pem::Error::NoItemsFound => format!("no PEM {what} in {}", path.display()),
        _ => format!("{}: not a valid PEM {what}", path.display()),
    };
    Error::Config { flag, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn flag_of(result: Result<TlsAcceptor, Error>) -> &'static str {
        match result {
            Err(Error::Config { flag, .. }) => flag,
            Err(e) => panic!("not a config error: {e}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn good_pair_loads_and_bad_files_name_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_path = write(dir.path(), "cert.pem", &cert.cert.pem());
        let key_path = write(dir.path(), "key.pem", &cert.signing_key.serialize_pem());
        let other_key = write(dir.path(), "other.pem", &other.signing_key.serialize_pem());
        let junk = write(dir.path(), "junk.pem", "not pem\n");
        let missing = dir.path().join("missing.pem");

        assert!(acceptor(&cert_path, &key_path).is_ok());
        assert_eq!(flag_of(acceptor(&missing, &key_path)), CERT_FLAG);
        assert_eq!(flag_of(acceptor(&junk, &key_path)), CERT_FLAG);
        assert_eq!(flag_of(acceptor(&key_path, &key_path)), CERT_FLAG);
        assert_eq!(flag_of(acceptor(&cert_path, &missing)), KEY_FLAG);
        assert_eq!(flag_of(acceptor(&cert_path, &cert_path)), KEY_FLAG);
        assert_eq!(flag_of(acceptor(&cert_path, &other_key)), KEY_FLAG);
    }
}
