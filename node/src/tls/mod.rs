//! TLS for the node's outbound calls: the HTTP client each hop uses (rustls, the platform's
//! roots plus the hop's `ca_cert`, an optional client certificate, every content coding),
//! the PEM files the config names, and (in `failure`) the one place that turns a failed
//! call into words a person can act on. It opens no connections itself.

mod failure;

pub use failure::{TlsFailure, describe};

use crate::config::{ConfigError, NodeConfig};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;

/// The TLS settings of one hop, as the config names them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hop<'a> {
    /// The config section, for messages: `server`, `llm` or `local_llm`.
    pub section: &'static str,
    /// A private CA (PEM), trusted in addition to the platform's roots.
    pub ca_cert: Option<&'a Path>,
    /// A client certificate chain and its key (PEM), for mutual TLS.
    pub client_cert: Option<(&'a Path, &'a Path)>,
}

/// An HTTP client builder for `hop`: rustls with the platform's roots and the hop's CA,
/// its client certificate, and gzip, br, deflate and zstd answers accepted (reqwest sends
/// `Accept-Encoding` and decodes them).
pub fn client_builder(hop: Hop<'_>) -> Result<reqwest::ClientBuilder, ConfigError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_native_certs(true)
        .gzip(true)
        .brotli(true)
        .deflate(true)
        .zstd(true);
    if let Some(path) = hop.ca_cert {
        for der in read_certs(hop.section, "ca_cert", path)? {
            let cert = reqwest::Certificate::from_der(&der)
                .map_err(|e| pem_error(hop.section, "ca_cert", path, e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    if let Some((cert_path, key_path)) = hop.client_cert {
        read_certs(hop.section, "client_cert", cert_path)?;
        read_key(hop.section, "client_key", key_path)?;
        let mut pem = read(hop.section, "client_cert", cert_path)?;
        pem.push(b'\n');
        pem.extend(read(hop.section, "client_key", key_path)?);
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
            pem_error(
                hop.section,
                "client_cert",
                cert_path,
                format!("unusable with `[{}] client_key`: {e}", hop.section),
            )
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

/// Reads and parses every PEM file the config names, so that a wrong path or a broken file
/// is a config error at load time.
pub fn check_files(config: &NodeConfig) -> Result<(), ConfigError> {
    let cas = [
        ("server", config.server.ca_cert.as_deref()),
        ("llm", config.llm.ca_cert.as_deref()),
        ("local_llm", config.local_llm.ca_cert.as_deref()),
    ];
    for (section, path) in cas {
        if let Some(path) = path {
            read_certs(section, "ca_cert", path)?;
        }
    }
    if let Some(path) = &config.server.client_cert {
        read_certs("server", "client_cert", path)?;
    }
    if let Some(path) = &config.server.client_key {
        read_key("server", "client_key", path)?;
    }
    Ok(())
}

fn pem_error(
    section: &'static str,
    key: &'static str,
    path: &Path,
    problem: String,
) -> ConfigError {
    ConfigError::Pem {
        section,
        key,
        path: path.to_owned(),
        problem,
    }
}

fn read(section: &'static str, key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| pem_error(section, key, path, format!("cannot read it: {e}")))
}

/// The certificates of a PEM file; at least one, each a parseable X.509 certificate.
fn read_certs(
    section: &'static str,
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(section, key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(section, key, path, format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_error(
            section,
            key,
            path,
            "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)".to_owned(),
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in &certs {
        store.add(cert.clone()).map_err(|e| {
            pem_error(
                section,
                key,
                path,
                format!("holds an invalid certificate: {e}"),
            )
        })?;
    }
    Ok(certs)
}

fn read_key(section: &'static str, key: &'static str, path: &Path) -> Result<(), ConfigError> {
    let bytes = read(section, key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        let problem = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (`-----BEGIN PRIVATE KEY-----`)".to_owned()
            }
            other => format!("invalid PEM: {other}"),
        };
        pem_error(section, key, path, problem)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::TestCa;
    use testkit::mock::{Coding, MockUpstream};

    /// GETs `/models` of `mock` with a client for `hop`.
    pub(super) async fn list(
        mock: &MockUpstream,
        host: &str,
        hop: Hop<'_>,
    ) -> Result<String, reqwest::Error> {
        let client = client_builder(hop).unwrap().build().unwrap();
        client
            .get(format!("{}/models", mock.base_url_at(host)))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    }

    pub(super) fn trusting<'a>(section: &'static str, ca: &'a TestCa) -> Hop<'a> {
        Hop {
            section,
            ca_cert: Some(ca.cert_path()),
            client_cert: None,
        }
    }

    #[tokio::test]
    async fn every_content_coding_is_asked_for_and_decoded() {
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["127.0.0.1"]);
        let mock = MockUpstream::start_tls(&["m"], &cert, &key).await.unwrap();
        for coding in Coding::ALL {
            mock.set_coding(Some(coding));
            let listed = list(&mock, "127.0.0.1", trusting("llm", &ca))
                .await
                .unwrap();
            let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
            assert_eq!(listed["data"][0]["id"], "m", "{coding:?}");
            let accepted = mock.accept_encoding().unwrap_or_default();
            assert!(accepted.contains(coding.name()), "{coding:?}: {accepted}");
        }
    }

    #[tokio::test]
    async fn a_client_certificate_is_presented_and_its_absence_is_named() {
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["127.0.0.1"]);
        let mock = MockUpstream::start_mutual_tls(&["m"], &cert, &key, ca.cert_path())
            .await
            .unwrap();
        let error = list(&mock, "127.0.0.1", trusting("server", &ca))
            .await
            .unwrap_err();
        assert!(
            matches!(TlsFailure::of(&error), Some(TlsFailure::Alert(_))),
            "{error:?}"
        );
        let message = describe(&error, "server");
        assert!(message.contains("`[server] client_cert`"), "{message}");

        let (client_cert, client_key) = ca.issue(&["node-1"]);
        let hop = Hop {
            client_cert: Some((&client_cert, &client_key)),
            ..trusting("server", &ca)
        };
        assert!(list(&mock, "127.0.0.1", hop).await.is_ok());
    }

    #[test]
    fn pem_problems_are_config_errors_that_name_the_key_and_the_path() {
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["127.0.0.1"]);
        let garbage = ca.dir().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let load = |pairs: &[(&str, &std::path::Path)]| {
            let env = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.display().to_string()));
            NodeConfig::load(None, env)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        let missing = std::path::Path::new("/nonexistent/ca.pem");
        let err = load(&[("OBB_NODE_SERVER_CA_CERT", missing)]).unwrap_err();
        assert!(
            err.contains("`[server] ca_cert` = `/nonexistent/ca.pem`: cannot read it"),
            "{err}"
        );
        let err = load(&[("OBB_NODE_LLM_CA_CERT", &garbage)]).unwrap_err();
        assert!(err.contains("`[llm] ca_cert`"), "{err}");
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = load(&[("OBB_NODE_LOCAL_LLM_CA_CERT", &key)]).unwrap_err();
        assert!(err.contains("`[local_llm] ca_cert`"), "{err}");
        let err = load(&[
            ("OBB_NODE_SERVER_CLIENT_CERT", &cert),
            ("OBB_NODE_SERVER_CLIENT_KEY", &cert),
        ])
        .unwrap_err();
        assert!(err.contains("`[server] client_key`"), "{err}");
        assert!(err.contains("no PEM private key"), "{err}");
        let err = load(&[("OBB_NODE_SERVER_CLIENT_CERT", &cert)]).unwrap_err();
        assert!(
            err.contains("`[server] client_cert` and `[server] client_key`"),
            "{err}"
        );
        load(&[
            ("OBB_NODE_SERVER_CA_CERT", ca.cert_path()),
            ("OBB_NODE_LLM_CA_CERT", ca.cert_path()),
            ("OBB_NODE_LOCAL_LLM_CA_CERT", ca.cert_path()),
            ("OBB_NODE_SERVER_CLIENT_CERT", &cert),
            ("OBB_NODE_SERVER_CLIENT_KEY", &key),
        ])
        .unwrap();
    }
}
