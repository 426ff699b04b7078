//! `data_plane_hosts` patterns (contract §4): the hosts a route-optimized serving endpoint's
//! data plane may be on. An answer of the Databricks API naming any other host is not followed.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::value::string_value;

/// The default `data_plane_hosts`: Databricks' data-plane domains on AWS, Azure and GCP.
pub const DEFAULT_DATA_PLANE_HOSTS: [&str; 3] = [
    "*.serving.cloud.databricks.com",
    "*.serving.azuredatabricks.net",
    "*.serving.gcp.databricks.com",
];

/// One pattern: an exact host name, `*.suffix` (exactly one more label in front of `suffix`,
/// as in a TLS wildcard certificate), or an IP literal. Compared case-insensitively; the port
/// of the URL is not part of the match.
#[derive(Clone, PartialEq, Eq)]
pub enum DataPlaneHost {
    Exact(Box<str>),
    Wildcard(Box<str>),
    Ip(IpAddr),
}

impl DataPlaneHost {
    /// Whether `host` (a URL's host: a name, an IPv4 literal, or an IPv6 literal in
    /// brackets) is allowed by this pattern.
    pub fn matches(&self, host: &url::Host<&str>) -> bool {
        match (self, host) {
            (DataPlaneHost::Exact(p), url::Host::Domain(d)) => p.eq_ignore_ascii_case(d),
            (DataPlaneHost::Wildcard(suffix), url::Host::Domain(d)) => {
                let d = d.trim_end_matches('.');
                d.len() > suffix.len() + 1
                    && d.is_char_boundary(d.len() - suffix.len())
                    && d[d.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && d.as_bytes()[d.len() - suffix.len() - 1] == b'.'
                    && !d[..d.len() - suffix.len() - 1].contains('.')
            }
            (DataPlaneHost::Ip(p), url::Host::Ipv4(a)) => *p == IpAddr::V4(*a),
            (DataPlaneHost::Ip(p), url::Host::Ipv6(a)) => *p == IpAddr::V6(*a),
            _ => false,
        }
    }
}

fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

impl FromStr for DataPlaneHost {
    type Err = String;

    fn from_str(s: &str) -> Result<DataPlaneHost, String> {
        let bare = s.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Ok(ip) = bare.unwrap_or(s).parse::<IpAddr>() {
            return Ok(DataPlaneHost::Ip(ip));
        }
        let err = || {
            format!(
                "{s:?} is not a host name, \"*.suffix\" or an IP literal (no scheme, port or path)"
            )
        };
        if let Some(suffix) = s.strip_prefix("*.") {
            // At least two labels after the wildcard: "*.com" would allow every .com host.
            if is_dns_name(suffix) && suffix.contains('.') {
                return Ok(DataPlaneHost::Wildcard(suffix.to_ascii_lowercase().into()));
            }
            return Err(err());
        }
        if is_dns_name(s) {
            Ok(DataPlaneHost::Exact(s.to_ascii_lowercase().into()))
        } else {
            Err(err())
        }
    }
}
string_value!(DataPlaneHost, "a host name, \"*.suffix\" or an IP literal");

impl fmt::Display for DataPlaneHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataPlaneHost::Exact(h) => f.write_str(h),
            DataPlaneHost::Wildcard(s) => write!(f, "*.{s}"),
            DataPlaneHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Debug for DataPlaneHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(pattern: &str, url: &str) -> bool {
        let p: DataPlaneHost = pattern.parse().unwrap();
        let u = url::Url::parse(url).unwrap();
        p.matches(&u.host().unwrap())
    }

    #[test]
    fn wildcards_take_exactly_one_label() {
        let p = "*.serving.cloud.databricks.com";
        assert!(allows(p, "https://abc.serving.cloud.databricks.com/1/x"));
        assert!(allows(
            p,
            "https://ABC.Serving.Cloud.Databricks.com:8443/1/x"
        ));
        assert!(!allows(p, "https://serving.cloud.databricks.com/"));
        assert!(!allows(p, "https://a.b.serving.cloud.databricks.com/"));
        assert!(!allows(p, "https://evilserving.cloud.databricks.com/"));
        assert!(!allows(
            p,
            "https://abc.serving.cloud.databricks.com.evil.io/"
        ));
        assert!(!allows(p, "https://127.0.0.1/"));
    }

    #[test]
    fn exact_names_and_ip_literals() {
        assert!(allows("dp.example.com", "https://DP.example.com/"));
        assert!(!allows("dp.example.com", "https://x.dp.example.com/"));
        assert!(allows("127.0.0.1", "https://127.0.0.1:9443/"));
        assert!(allows("[::1]", "https://[::1]:9443/"));
        assert!(allows("::1", "https://[::1]/"));
        assert!(!allows("127.0.0.1", "https://localhost/"));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            "",
            "*",
            "*.com",
            "https://x.example.com",
            "x.example.com:443",
            "x.example.com/path",
            "*x.example.com",
            "a.*.example.com",
            "-a.example.com",
        ] {
            assert!(bad.parse::<DataPlaneHost>().is_err(), "{bad:?}");
        }
    }
}
