//! HTTPS for the webhook: a serving certificate that can be replaced while serving (each new
//! connection gets the current one), read from PEM files (cert-manager mounts its Secret) or
//! set by the self-managed certificates, and the accept loop (one task per connection, the
//! TLS handshake inside it, HTTP/1.1 with keep-alive).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The serving certificate in force; replaced by [`ServingCert::set_pem`].
#[derive(Debug, Default)]
pub struct ServingCert {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The PEM last loaded, to tell a change from a re-read.
    pem: RwLock<Vec<u8>>,
}

impl ServingCert {
    /// Loads a certificate chain and its private key (PEM). Returns whether it changed.
    pub fn set_pem(&self, cert: &[u8], key: &[u8]) -> Result<bool, String> {
        let both = [cert, key].concat();
        if *self.pem.read().unwrap_or_else(|e| e.into_inner()) == both {
            return Ok(false);
        }
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("serving certificate: {e}"))?;
        if chain.is_empty() {
            return Err("serving certificate: no CERTIFICATE block".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("serving key: {e}"))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| format!("serving certificate and key: {e}"))?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(certified));
        *self.pem.write().unwrap_or_else(|e| e.into_inner()) = both;
        Ok(true)
    }

    /// Whether a certificate is loaded.
    pub fn loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Reloads `tls.crt` and `tls.key` from `dir` every `every` (a mounted Secret is updated in
/// place by the kubelet when cert-manager renews it).
pub async fn watch_files(dir: std::path::PathBuf, cert: Arc<ServingCert>, every: Duration) {
    loop {
        let read = (
            tokio::fs::read(dir.join("tls.crt")).await,
            tokio::fs::read(dir.join("tls.key")).await,
        );
        match read {
            (Ok(c), Ok(k)) => match cert.set_pem(&c, &k) {
                Ok(true) => {
                    tracing::info!(dir = %dir.display(), "webhook serving certificate loaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "webhook serving certificate not loaded")
                }
            },
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot read the webhook serving certificate")
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Serves `app` over HTTPS on `listener` with the certificate in `cert` until dropped.
pub async fn serve(listener: tokio::net::TcpListener, cert: Arc<ServingCert>, app: Router) {
    let mut config = match rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_no_client_auth().with_cert_resolver(cert),
        Err(e) => {
            tracing::error!(error = %e, "cannot configure TLS; the webhook does not serve");
            return;
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = TowerToHyperService::new(app);
            let served = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}
