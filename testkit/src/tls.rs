//! A private certificate authority for tests: makes a CA and leaf certificates with `rcgen`
//! and writes them as PEM files into a temp dir, for TLS servers (the mock upstream, the
//! gateway, nginx) and for the clients that must trust them. Nothing here touches the
//! system's trust store.
//!
//! ```no_run
//! let ca = testkit::TestCa::new();
//! let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]);
//! // Serve with `cert` and `key`; trust `ca.cert_path()` on the client.
//! let (expired_cert, expired_key) = ca.issue_expired(&["127.0.0.1"]);
//! let (elsewhere_cert, elsewhere_key) = ca.issue_wrong_host();
//! // An unknown CA: a leaf of another `TestCa` that the client does not trust.
//! ```

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, date_time_ymd,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The host name `issue_wrong_host` certifies: one no test connects to.
pub const WRONG_HOST: &str = "not-this-host.invalid";

/// A CA whose certificate and leaves live in a temp dir that is removed on drop.
pub struct TestCa {
    dir: tempfile::TempDir,
    cert: Certificate,
    key: KeyPair,
    cert_path: PathBuf,
    issued: AtomicUsize,
}

impl TestCa {
    /// A fresh CA (ECDSA P-256), its certificate written to `ca.pem`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        // A name of its own, so that no two test CAs pass for each other.
        let unique = dir
            .path()
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        params
            .distinguished_name
            .push(DnType::CommonName, format!("OpenBeepBoop test CA {unique}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("the CA certificate");
        let cert_path = dir.path().join("ca.pem");
        std::fs::write(&cert_path, cert.pem()).expect("ca.pem written");
        Self {
            dir,
            cert,
            key,
            cert_path,
            issued: AtomicUsize::new(0),
        }
    }

    /// The CA's certificate (PEM): what a client sets as `ca_cert`.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The directory the PEM files are written to.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), valid now, usable by a
    /// server and as a client certificate. Returns the paths of its PEM certificate and
    /// its PEM (PKCS#8) private key.
    pub fn issue(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        self.leaf(names, false)
    }

    /// Like `issue`, but the certificate expired long ago (valid only in the year 2000).
    pub fn issue_expired(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        self.leaf(names, true)
    }

    /// A valid leaf for `WRONG_HOST` only, so a client connecting to `127.0.0.1` or
    /// `localhost` sees a host-name mismatch.
    pub fn issue_wrong_host(&self) -> (PathBuf, PathBuf) {
        self.leaf(&[WRONG_HOST], false)
    }

    fn leaf(&self, names: &[&str], expired: bool) -> (PathBuf, PathBuf) {
        let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(owned).expect("leaf names");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2000, 12, 31);
        }
        let key = KeyPair::generate().expect("a leaf key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("the leaf certificate");
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        let cert_path = self.dir.path().join(format!("leaf-{n}.pem"));
        let key_path = self.dir.path().join(format!("leaf-{n}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("leaf certificate written");
        std::fs::write(&key_path, key.serialize_pem()).expect("leaf key written");
        (cert_path, key_path)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
