//! TLS material: an identity generated and kept for local runs, or loaded
//! from certificate files for real ones; certificates to trust.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::error::NetError;

/// Certificate and key files for a real deployment (the `tls` setting of
/// the origin and the relay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

/// A certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// A fresh self-signed certificate for `names` (for local runs and tests;
    /// clients must be told to trust it).
    pub fn self_signed(names: &[&str]) -> Result<Identity, NetError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert =
            rcgen::generate_simple_self_signed(names).map_err(|e| NetError::Tls(e.to_string()))?;
        let key = PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
        Ok(Identity {
            certs: vec![cert.cert.der().clone()],
            key: key.into(),
        })
    }

    /// The identity a server presents: from its certificate files when it has
    /// them (a deployment); otherwise, for local runs, the self-signed one
    /// kept in `keep` (private key and certificate, PEM, mode 0600), generated
    /// there on first use and reused at every later start, so that peers
    /// trusting its certificate keep trusting it across restarts (without
    /// `keep`, a fresh one every time). The certificate is also written as
    /// PEM to `cert_out` (if given) for peers to trust.
    pub fn from_files_or_generate(
        tls: Option<&TlsFiles>,
        keep: Option<&Path>,
        cert_out: Option<&Path>,
    ) -> Result<Identity, NetError> {
        if let Some(files) = tls {
            return Identity::from_pem_files(&files.cert, &files.key);
        }
        let id = match keep {
            Some(path) if path.exists() => Identity::from_pem_files(path, path)?,
            Some(path) => {
                let fresh = Identity::self_signed(&["localhost", "127.0.0.1"])?;
                let pem = format!("{}{}", fresh.key_pem(), fresh.cert_pem());
                // Another process may have created it first: use the file's.
                crate::secret::create_private(path, pem.as_bytes())?;
                Identity::from_pem_files(path, path)?
            }
            None => Identity::self_signed(&["localhost", "127.0.0.1"])?,
        };
        if let Some(path) = cert_out {
            let pem = id.cert_pem();
            if std::fs::read(path).ok().as_deref() != Some(pem.as_bytes()) {
                crate::secret::replace_file(path, pem.as_bytes())?;
            }
        }
        Ok(id)
    }

    /// Load a PEM certificate chain and a PEM private key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Identity, NetError> {
        let certs = load_certs(cert)?;
        let key_pem = std::fs::read(key)?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())?
            .ok_or_else(|| NetError::Tls(format!("no private key in {}", key.display())))?;
        Ok(Identity { certs, key })
    }

    /// The private key as PEM (PKCS#8), to hand to a server process.
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_encode(label, self.key.secret_der())
    }

    /// The leaf certificate as PEM, for a client to trust.
    pub fn cert_pem(&self) -> String {
        let der = self.certs.first().map(|c| c.as_ref()).unwrap_or_default();
        pem_encode("CERTIFICATE", der)
    }
}

/// Every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let pem = std::fs::read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(NetError::Tls(format!(
            "no certificate in {}",
            path.display()
        )));
    }
    Ok(certs)
}

/// Every certificate in PEM text.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, NetError> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(NetError::Tls("no certificate in PEM text".into()));
    }
    Ok(certs)
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The one crypto provider every configuration uses.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_round_trips_through_pem_files() {
        let id = Identity::self_signed(&["localhost"]).expect("generate");
        let dir = std::env::temp_dir().join(format!("ringside-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, id.cert_pem()).expect("write");
        std::fs::write(&key, id.key_pem()).expect("write");
        let back = Identity::from_pem_files(&cert, &key).expect("load");
        assert_eq!(back.certs, id.certs);
        assert_eq!(back.key.secret_der(), id.key.secret_der());
        assert_eq!(parse_certs(&id.cert_pem()).expect("parse"), id.certs);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_kept_identity_is_reused_at_the_next_start() {
        let dir = std::env::temp_dir().join(format!("ringside-keep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (keep, cert) = (dir.join("id.pem"), dir.join("out").join("cert.pem"));
        let first = Identity::from_files_or_generate(None, Some(&keep), Some(&cert)).expect("gen");
        let again = Identity::from_files_or_generate(None, Some(&keep), Some(&cert)).expect("load");
        assert_eq!(again.certs, first.certs, "the same certificate");
        assert_eq!(
            again.key.secret_der(),
            first.key.secret_der(),
            "the same key"
        );
        assert_eq!(load_certs(&cert).expect("written"), first.certs);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&keep).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the key is private");
        }
        // A lost certificate file is written again from the kept identity.
        std::fs::remove_file(&cert).expect("rm");
        Identity::from_files_or_generate(None, Some(&keep), Some(&cert)).expect("load");
        assert_eq!(load_certs(&cert).expect("rewritten"), first.certs);
        // Without a place to keep it, every start is a new identity.
        let fresh = Identity::from_files_or_generate(None, None, None).expect("gen");
        assert_ne!(fresh.certs, first.certs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
