//! Throwaway certificate authorities and certificates for TLS tests, made with rcgen at test
//! time and written as PEM files that nats-server, redis-server and the workers read.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A test CA, a server certificate for 127.0.0.1/localhost, a client certificate, and a
/// second, unrelated CA (what a client that trusts the wrong authority has). The PEM files
/// live as long as the value.
pub struct Pki {
    /// Holds the PEM files; removed on drop.
    _dir: TempDir,
    /// The CA that signed both leaf certificates.
    pub ca: PathBuf,
    /// The server's certificate (for `127.0.0.1` and `localhost`, server auth).
    pub server_cert: PathBuf,
    /// The server certificate's private key.
    pub server_key: PathBuf,
    /// A client certificate signed by the same CA (client auth).
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting it instead of `ca` must fail.
    pub other_ca: PathBuf,
}

impl Pki {
    /// Makes the CAs and certificates and writes them to a fresh temporary directory.
    ///
    /// Panics when rcgen or the file system fails: a test cannot go on without them.
    pub fn generate() -> Pki {
        let ca = self_signed_ca("threadline test CA");
        let other = self_signed_ca("someone else's CA");
        let leaf = |usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
                    .expect("leaf params");
            params.extended_key_usages = vec![usage];
            params
                .distinguished_name
                .push(DnType::CommonName, "threadline test");
            let cert = params.signed_by(&key, &ca).expect("sign leaf");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf(ExtendedKeyUsagePurpose::ClientAuth);
        let dir = tempfile::tempdir().expect("pki dir");
        let write = |name: &str, pem: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        Pki {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server-key.pem", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client-key.pem", &client_key),
            other_ca: write("other-ca.pem", &other.pem()),
            _dir: dir,
        }
    }

    /// The directory holding the PEM files.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("dir", &self.dir()).finish()
    }
}

/// A self-signed CA named `name`, with a fresh key.
fn self_signed_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_writes_every_pem_file_and_removes_them_on_drop() {
        let pki = Pki::generate();
        let dir = pki.dir().to_owned();
        for path in [
            &pki.ca,
            &pki.server_cert,
            &pki.server_key,
            &pki.client_cert,
            &pki.client_key,
            &pki.other_ca,
        ] {
            let pem = std::fs::read_to_string(path).expect("PEM file");
            assert!(pem.starts_with("-----BEGIN "), "{}: {pem}", path.display());
        }
        assert_ne!(
            std::fs::read(&pki.ca).expect("ca"),
            std::fs::read(&pki.other_ca).expect("other ca"),
            "the two CAs are different authorities"
        );
        drop(pki);
        assert!(!dir.exists(), "the PEM files go with the value");
    }
}
