//! Why an outbound call failed, in words a person can act on: the rustls error found in the
//! cause chain (unknown CA, expired, wrong host, …) with the config key that fixes it, or a
//! timeout or refused connection. Used by the gateway client and the upstream client alike.

use rustls::CertificateError;
use rustls::pki_types::ServerName;
use std::error::Error;

/// Why a TLS handshake failed, in the terms a person fixes it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsFailure {
    /// The chain ends at a CA this node does not trust: a self-signed certificate or a
    /// private CA.
    UnknownIssuer,
    /// The chain names a trusted CA, but that CA's key did not sign it: often a private CA
    /// made again under the same name.
    BadSignature,
    /// The certificate's `notAfter` has passed; `days` ago, when rustls says.
    Expired { days: Option<u64> },
    /// The certificate's `notBefore` is still ahead.
    NotValidYet,
    /// The certificate does not name the host in the URL.
    WrongHost {
        expected: Option<String>,
        presented: Vec<String>,
    },
    /// The server ended the handshake with an alert, for instance about our client
    /// certificate.
    Alert(String),
    /// The server did not speak TLS (often: plain HTTP on an `https://` URL).
    NotTls(String),
    /// Anything else rustls refused.
    Other(String),
}

impl TlsFailure {
    /// Finds the rustls error in `error`'s causes, if there is one.
    pub fn of(error: &(dyn Error + 'static)) -> Option<Self> {
        causes(error)
            .into_iter()
            .find_map(|e| e.downcast_ref::<rustls::Error>())
            .map(Self::from_rustls)
    }

    fn from_rustls(error: &rustls::Error) -> Self {
        match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::UnknownIssuer => Self::UnknownIssuer,
                CertificateError::BadSignature => Self::BadSignature,
                CertificateError::Expired => Self::Expired { days: None },
                CertificateError::ExpiredContext { time, not_after } => Self::Expired {
                    days: Some(time.as_secs().saturating_sub(not_after.as_secs()) / 86_400),
                },
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    Self::NotValidYet
                }
                CertificateError::NotValidForName => Self::WrongHost {
                    expected: None,
                    presented: Vec::new(),
                },
                CertificateError::NotValidForNameContext {
                    expected,
                    presented,
                } => Self::WrongHost {
                    expected: Some(server_name(expected)),
                    presented: presented.iter().map(|n| plain_name(n)).collect(),
                },
                other => Self::Other(format!("invalid certificate: {other:?}")),
            },
            rustls::Error::AlertReceived(alert) => Self::Alert(format!("{alert:?}")),
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                Self::NotTls(error.to_string())
            }
            other => Self::Other(other.to_string()),
        }
    }

    /// What went wrong and what to do, for the hop configured in `[section]`.
    pub fn describe(&self, section: &str) -> String {
        match self {
            Self::UnknownIssuer => format!(
                "its TLS certificate is signed by an unknown CA (unknown issuer: self-signed, \
                 or a private CA this node does not trust); set `[{section}] ca_cert` to the \
                 CA's PEM file"
            ),
            Self::BadSignature => format!(
                "its TLS certificate names a trusted CA as its issuer but was signed by another \
                 key (was the CA made again under the same name?); set `[{section}] ca_cert` to \
                 the PEM of the CA that signed it"
            ),
            Self::Expired { days } => {
                let when = days.map_or_else(String::new, |d| format!(" {d} days ago"));
                format!(
                    "its TLS certificate expired{when}; renew it on the server, or check this \
                     machine's clock"
                )
            }
            Self::NotValidYet => "its TLS certificate is not valid yet; check this machine's \
                                  clock and the server's"
                .to_owned(),
            Self::WrongHost {
                expected,
                presented,
            } => {
                let host = expected
                    .as_ref()
                    .map_or_else(String::new, |h| format!(" `{h}`"));
                let names = if presented.is_empty() {
                    String::new()
                } else {
                    let listed: Vec<String> = presented.iter().map(|n| format!("`{n}`")).collect();
                    format!(" (it names {})", listed.join(", "))
                };
                format!(
                    "its TLS certificate is not valid for the host name{host}{names}; put a \
                     name the certificate lists in the URL, or reissue the certificate"
                )
            }
            Self::Alert(alert) => {
                let hint = if section == "server" {
                    "; if the gateway requires a client certificate, check `[server] \
                     client_cert` and `[server] client_key`"
                } else {
                    ""
                };
                format!("the server ended the TLS handshake with the alert `{alert}`{hint}")
            }
            Self::NotTls(detail) => format!(
                "it did not answer in TLS ({detail}); if it serves plain HTTP, use an \
                 `http://` URL"
            ),
            Self::Other(detail) => format!("the TLS handshake failed: {detail}"),
        }
    }
}

/// Says why a call to the hop configured in `[section]` failed: a TLS problem by name, a
/// timeout, a refused connection, or the innermost cause.
pub fn describe(error: &reqwest::Error, section: &str) -> String {
    if let Some(failure) = TlsFailure::of(error) {
        return failure.describe(section);
    }
    let all = causes(error);
    let root = all.last().map(ToString::to_string).unwrap_or_default();
    let io_kind = |kind: std::io::ErrorKind| {
        all.iter().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == kind)
        })
    };
    let https = error.url().is_some_and(|url| url.scheme() == "https");
    if error.is_timeout() {
        format!("timed out ({root})")
    } else if io_kind(std::io::ErrorKind::ConnectionRefused) {
        format!("refused the connection ({root})")
    } else if https && error.is_connect() && io_kind(std::io::ErrorKind::UnexpectedEof) {
        format!(
            "it closed the connection during the TLS handshake ({root}); if it serves plain \
             HTTP, use an `http://` URL"
        )
    } else if error.is_connect() {
        format!("could not connect ({root})")
    } else {
        format!("failed ({root})")
    }
}

/// `error` and its causes. `std::io::Error::source` skips the error it wraps, so the wrapped
/// error and its own causes are visited too.
fn causes<'a>(error: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut found = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        found.push(current);
        if let Some(inner) = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            let inner: &(dyn Error + 'static) = inner;
            found.extend(causes(inner));
            return found;
        }
        next = current.source();
    }
    found
}

fn server_name(name: &ServerName<'_>) -> String {
    name.to_str().into_owned()
}

/// A name as the certificate lists it, without webpki's `DnsName("…")` or `IpAddress(…)`.
fn plain_name(presented: &str) -> String {
    let inner = presented
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            presented
                .strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        });
    inner.unwrap_or(presented).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{list, trusting};
    use crate::tls::{Hop, client_builder};
    use testkit::TestCa;
    use testkit::mock::MockUpstream;

    #[tokio::test]
    async fn an_unknown_ca_an_expired_certificate_and_a_wrong_host_are_named_as_such() {
        let ca = TestCa::new();
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
        let good = MockUpstream::start_tls(&["m"], &cert, &key).await.unwrap();
        let (cert, key) = ca.issue_expired(&["127.0.0.1"]);
        let expired = MockUpstream::start_tls(&["m"], &cert, &key).await.unwrap();
        let (cert, key) = ca.issue_wrong_host();
        let elsewhere = MockUpstream::start_tls(&["m"], &cert, &key).await.unwrap();

        let platform_only = Hop {
            section: "llm",
            ..Hop::default()
        };
        let error = list(&good, "127.0.0.1", platform_only).await.unwrap_err();
        assert_eq!(TlsFailure::of(&error), Some(TlsFailure::UnknownIssuer));
        let message = describe(&error, "llm");
        assert!(message.contains("unknown CA"), "{message}");
        assert!(message.contains("set `[llm] ca_cert`"), "{message}");
        assert!(!message.contains("refused"), "{message}");

        let error = list(&expired, "127.0.0.1", trusting("server", &ca))
            .await
            .unwrap_err();
        assert!(
            matches!(TlsFailure::of(&error), Some(TlsFailure::Expired { .. })),
            "{error:?}"
        );
        let message = describe(&error, "server");
        assert!(message.contains("expired"), "{message}");

        let error = list(&elsewhere, "localhost", trusting("local_llm", &ca))
            .await
            .unwrap_err();
        let message = describe(&error, "local_llm");
        assert!(
            matches!(TlsFailure::of(&error), Some(TlsFailure::WrongHost { .. })),
            "{error:?}"
        );
        assert!(
            message.contains("not valid for the host name `localhost`"),
            "{message}"
        );
        assert!(
            message.contains(&format!("(it names `{}`)", testkit::WRONG_HOST)),
            "{message}"
        );

        let listed = list(&good, "localhost", trusting("llm", &ca))
            .await
            .unwrap();
        assert!(
            listed.contains("\"m\""),
            "a private CA is trusted: {listed}"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_and_plain_http_on_an_https_url_are_named() {
        let port = testkit::free_port();
        let client = client_builder(Hop::default()).unwrap().build().unwrap();
        let error = client
            .get(format!("http://127.0.0.1:{port}/v1/models"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(TlsFailure::of(&error), None);
        let message = describe(&error, "llm");
        assert!(message.starts_with("refused the connection"), "{message}");

        // The mock hangs up on what is not HTTP; a real server answers 400 in plain text.
        let plain = MockUpstream::start(&["m"]).await.unwrap();
        let url = format!("https://127.0.0.1:{}/v1/models", plain.port);
        let error = client.get(url).send().await.unwrap_err();
        let message = describe(&error, "llm");
        assert!(message.contains("during the TLS handshake"), "{message}");
        assert!(message.contains("`http://`"), "{message}");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut hello = [0; 512];
            let _ = stream.read(&mut hello).await.unwrap();
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        });
        let url = format!("https://127.0.0.1:{port}/v1/models");
        let error = client.get(url).send().await.unwrap_err();
        assert!(
            matches!(TlsFailure::of(&error), Some(TlsFailure::NotTls(_))),
            "{error:?}"
        );
        let message = describe(&error, "llm");
        assert!(message.contains("did not answer in TLS"), "{message}");
        server.await.unwrap();
    }

    #[test]
    fn names_lose_the_verifier_s_wrapping() {
        assert_eq!(plain_name("DnsName(\"gw.example\")"), "gw.example");
        assert_eq!(plain_name("IpAddress(10.0.0.2)"), "10.0.0.2");
        assert_eq!(plain_name("odd"), "odd");
    }
}
