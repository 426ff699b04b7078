//! Outbound HTTPS through a corporate proxy to an IdP whose certificate is issued by a private
//! CA (the on-premises Keycloak/ADFS case): the real `idgate` binary with `HTTPS_PROXY` set,
//! an HTTPS JWKS server for `idp.corp.internal` whose certificate a throw-away CA signed, and
//! a recording `CONNECT` proxy that is the only way to that name (nothing resolves it: the
//! proxy maps it to the server).
//!
//! - With `ca_file` naming that CA, the keys load through the proxy (the proxy saw
//!   `CONNECT idp.corp.internal:443`), `/ready` turns 200 and a token signed with the IdP's
//!   key is allowed.
//! - Without it, the same server is not trusted (neither the system store nor the bundled
//!   roots know the CA): the keys never load and the token is refused (`unknown_key`).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use support::agent::Agent;
use support::auth_kit::{claims, jwks, Signer};
use support::echo::{server_tls_config, TestCerts};
use support::spop_client::{Request, SpopClient};
use support::{background_runtime, POLL_INTERVAL, READY_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const IDP_HOST: &str = "idp.corp.internal";

/// HTTPS on 127.0.0.1 answering every request with `body` (JSON).
async fn https_json(certs: &TestCerts, body: String) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls_config(certs)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

/// An HTTP `CONNECT` proxy that tunnels every target to `to` and records the targets asked for.
async fn connect_proxy(to: SocketAddr, seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match client.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => head.push(byte[0]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut words = head.split_whitespace();
                if words.next() != Some("CONNECT") {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                seen.lock()
                    .unwrap()
                    .push(words.next().unwrap_or("").to_owned());
                let Ok(mut server) = TcpStream::connect(to).await else {
                    return;
                };
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    addr
}

fn agent_config(ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file.map_or(String::new(), |p| format!("ca_file = {:?}\n", p));
    format!(
        r#"
[log]
level = "info"
audit = "off"

[[issuer]]
name = "corp"
issuer = "https://{IDP_HOST}/realms/corp"
jwks_uri = "https://{IDP_HOST}/realms/corp/protocol/openid-connect/certs"
audiences = ["api"]
algorithms = ["RS256"]
{ca}
[[rule]]
name = "api"
paths = ["/api/**"]
"#
    )
}

#[test]
fn a_private_ca_idp_is_reached_through_the_proxy_only_with_its_ca_file() {
    let rt = background_runtime();
    let dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(dir.path(), IDP_HOST);
    let signer = Signer::rsa("corp-rsa-1");
    let server = rt.block_on(https_json(&certs, jwks(&[&signer]).to_string()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = rt.block_on(connect_proxy(server, seen.clone()));
    let proxy_url = format!("http://{proxy}");
    let env = [
        ("HTTPS_PROXY", proxy_url.as_str()),
        ("NO_PROXY", ""),
        ("no_proxy", ""),
    ];
    let token = signer.token(&claims(&format!("https://{IDP_HOST}/realms/corp")));
    let req = Request::new("GET", "/api/2.0/clusters/list").bearer(&token);

    let trusting = Agent::start_with_env(&agent_config(Some(&certs.ca)), &env);
    assert!(
        trusting.wait_ready(READY_TIMEOUT),
        "keys never loaded through the proxy with ca_file\n{}",
        trusting.log()
    );
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|t| t == &format!("{IDP_HOST}:443")),
        "the proxy saw {:?}",
        seen.lock().unwrap()
    );
    let vars = SpopClient::open_to(&trusting.spop_addr()).decide(&req);
    assert!(vars.allow(), "{vars:?}");
    assert_eq!(vars.str("sub").as_deref(), Some("alice"));
    drop(trusting);

    // The same IdP without ca_file: the certificate does not verify, nothing is accepted.
    let before = seen.lock().unwrap().len();
    let strict = Agent::start_with_env(&agent_config(None), &env);
    let deadline = Instant::now() + READY_TIMEOUT;
    while strict
        .metric(
            "idgate_jwks_refresh_total",
            &[("issuer", "corp"), ("result", "failure")],
        )
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "no failed key fetch\n{}",
            strict.log()
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    assert!(
        seen.lock().unwrap().len() > before,
        "the fetch went through the proxy"
    );
    assert!(!strict.is_ready(), "ready without keys");
    let vars = SpopClient::open_to(&strict.spop_addr()).decide(&req);
    assert!(!vars.allow());
    assert_eq!(vars.reason(), "unknown_key");
    assert!(
        strict.log().contains("certificate") || strict.log().contains("UnknownIssuer"),
        "the log says why: {}",
        strict.log()
    );
    drop(rt);
}
