//! The byte stream under the events websocket: TCP to the host of the events URL, TLS for
//! `wss://` (webpki roots), and the [`FrameGuard`] on top, so the guard sees the frames in
//! plain text (tokio-tungstenite's own connector would put TLS above it).
//!
//! A failure names the URL (never credentials) and the cause: connection refused, DNS, TLS.

use std::sync::{Arc, OnceLock};

use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::MaybeTlsStream;

use crate::source::frame_guard::FrameGuard;
use crate::source::StreamError;

/// The guarded byte stream of one connection.
pub type Guarded = FrameGuard<MaybeTlsStream<TcpStream>>;

/// TLS settings for `wss://`: the webpki roots, ring, TLS 1.2 and 1.3.
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|builder| {
                    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
                })
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Host, port and whether TLS is used, from a `ws://` or `wss://` URI.
fn target(uri: &Uri) -> Result<(String, u16, bool), String> {
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err("not a ws:// or wss:// URL".to_owned()),
    };
    let host = uri.host().ok_or("no host")?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}

/// Opens the guarded byte stream to `uri` (`shown` names it in errors), passing data
/// messages of at most `limit` bytes; markers carry `nonce`.
pub async fn open(
    uri: &Uri,
    shown: &str,
    limit: usize,
    nonce: [u8; 8],
) -> Result<Guarded, StreamError> {
    let failed = |cause: String| StreamError::Connect(format!("{shown}: {cause}"));
    let (host, port, tls) = target(uri).map_err(failed)?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| failed(format!("cannot connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream = if tls {
        let config = tls_config().map_err(|e| failed(format!("TLS setup: {e}")))?;
        let name = ServerName::try_from(host.clone())
            .map_err(|_| failed(format!("'{host}' is not a valid TLS server name")))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| failed(format!("TLS handshake with {host}:{port}: {e}")))?;
        MaybeTlsStream::Rustls(tls)
    } else {
        MaybeTlsStream::Plain(tcp)
    };
    Ok(FrameGuard::new(stream, limit, nonce))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_from_events_urls() {
        let t = |u: &str| target(&u.parse::<Uri>().unwrap());
        assert_eq!(
            t("ws://127.0.0.1:4200/api/events/out"),
            Ok(("127.0.0.1".to_owned(), 4200, false))
        );
        assert_eq!(
            t("wss://api.prefect.cloud/api/accounts/a/workspaces/w/events/out"),
            Ok(("api.prefect.cloud".to_owned(), 443, true))
        );
        assert_eq!(t("ws://[::1]/x"), Ok(("::1".to_owned(), 80, false)));
        assert!(t("http://h/x").is_err());
    }

    #[test]
    fn the_tls_settings_build() {
        assert!(tls_config().is_ok());
    }
}
