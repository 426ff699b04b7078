//! `[admin]`: the HTTP endpoint with `/metrics`, `/live`, `/ready`.

use std::net::SocketAddr;

use super::read::Table;

/// `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// Default `127.0.0.1:9180`.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: "127.0.0.1:9180".parse().expect("valid default"),
        }
    }
}

impl AdminConfig {
    pub(crate) fn read(t: &mut Table<'_, '_>) -> AdminConfig {
        let mut c = AdminConfig::default();
        t.set("listen", &mut c.listen);
        c
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems;

    #[test]
    fn listen_is_an_ip_and_port() {
        let p = problems("[admin]\nlisten = \"localhost:9180\"\n");
        assert_eq!(p[0].key, "admin.listen");
        assert!(p[0].message.contains("invalid socket address"), "{}", p[0]);
    }
}
