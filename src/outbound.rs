//! The HTTP client of every outbound call (OIDC discovery, JWKS, token endpoints, the
//! Databricks serving-endpoint lookups).
//!
//! - **Trust**: the operating system's store (`/etc/ssl/certs` on Debian, via
//!   `rustls-native-certs`) plus the Mozilla roots bundled in the binary (`webpki-roots`), so a
//!   corporate CA installed with `update-ca-certificates` works, and so does a machine whose
//!   store is empty. An issuer or upstream with `ca_file` gets its own client that also trusts
//!   the CAs of that PEM file.
//! - **Proxies**: `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`, `ALL_PROXY` and
//!   `NO_PROXY` from the environment are honoured (reqwest's system-proxy support): set them in
//!   the systemd unit (`Environment=`) to reach IdPs and Databricks through a corporate proxy.
//!   TLS is end to end through a `CONNECT` tunnel: the proxy sees host names, never tokens.
//! - **No redirects** (a token endpoint that redirects is misconfigured; following would turn
//!   the POST into a GET), a 5 s connect bound; per-call timeouts come from each caller's
//!   configuration.

use std::path::Path;
use std::time::Duration;

/// The client with the default trust (system store and bundled roots).
pub fn client() -> reqwest::Client {
    builder()
        .build()
        .expect("reqwest client with rustls builds")
}

/// [`client`]'s settings, to add to.
pub fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("idgate/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
}

/// The CA certificates of a PEM file (`ca_file`), or why they cannot be used.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in the file (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            path.display()
        ));
    }
    Ok(certs)
}

/// A client like [`client`] that also trusts the CAs of the PEM file at `path` (read now: a
/// reload that rebuilds the issuer or upstream reads it again).
pub(crate) fn client_trusting(path: &Path) -> Result<reqwest::Client, String> {
    read_ca_file(path)?
        .into_iter()
        .fold(builder(), |b, c| b.add_root_certificate(c))
        .build()
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_files_must_hold_certificates() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing.pem");
        assert!(read_ca_file(&missing).unwrap_err().contains("cannot read"));
        let empty = d.path().join("empty.pem");
        std::fs::write(&empty, "just text\n").unwrap();
        assert!(read_ca_file(&empty)
            .unwrap_err()
            .contains("no certificate in the file"));
        // A throw-away CA made with the openssl command (Debian always has it).
        let ca = d.path().join("ca.pem");
        let made = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args([
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=idgate test CA",
                "-keyout",
            ])
            .arg(d.path().join("ca.key"))
            .arg("-out")
            .arg(&ca)
            .output()
            .expect("openssl runs");
        assert!(made.status.success(), "{made:?}");
        assert_eq!(read_ca_file(&ca).unwrap().len(), 1);
        client_trusting(&ca).unwrap();
    }
}
