//! Typed values shared by several sections: durations and HTTPS-or-loopback URLs, and the
//! helper that deserializes a type from a TOML string through its parser.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::time::Duration;

/// Deserializes `T` from a TOML string with `T::from_str`; anything else is "invalid type:
/// ..., expected {expecting}".
pub(crate) struct StrVisitor<T> {
    expecting: &'static str,
    ty: PhantomData<fn() -> T>,
}

impl<T> StrVisitor<T> {
    pub(crate) const fn new(expecting: &'static str) -> Self {
        StrVisitor {
            expecting,
            ty: PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> serde::de::Visitor<'_> for StrVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

/// `impl Deserialize` for a type written as a TOML string and parsed by its `FromStr`
/// (`Err = String`, the message of the configuration problem).
macro_rules! string_value {
    ($ty:ty, $expecting:literal) => {
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str(crate::config::value::StrVisitor::<$ty>::new($expecting))
            }
        }
    };
}
pub(crate) use string_value;

/// A duration written as a humantime string in TOML (`"30s"`, `"10m"`, `"1h 30m"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Dur, String> {
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| format!("invalid duration {s:?}: {e}"))
    }
}
string_value!(Dur, "a duration such as \"30s\" or \"10m\"");

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

pub(crate) const fn secs(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}

/// A URL idgate may call (contract §4): `https://`, or `http://` for a loopback host
/// (`127.0.0.0/8`, `::1`, `localhost`: local IdPs and tests). Keeps the text as written: an
/// issuer URL is also the exact `iss` value to accept, which parsing would normalize (a
/// trailing `/` added to a bare host).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    text: Box<str>,
    url: url::Url,
}

impl HttpsUrl {
    /// The URL exactly as configured.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parsed URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }
}

impl FromStr for HttpsUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<HttpsUrl, String> {
        check_url(s).map(|url| HttpsUrl {
            text: s.into(),
            url,
        })
    }
}
string_value!(HttpsUrl, "an https:// URL");

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text)
    }
}

/// The URL rule of [`HttpsUrl`], also applied to URLs learned at run time (a discovered
/// `jwks_uri`).
pub(crate) fn check_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    match u.scheme() {
        "https" => Ok(u),
        "http" if is_loopback_host(&u) => Ok(u),
        "http" => Err(format!(
            "{s:?}: http:// is only allowed for loopback hosts; use https://"
        )),
        other => Err(format!("{s:?}: unsupported scheme {other:?}")),
    }
}

fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

/// Names that become metric labels and log fields (issuers): A-Z a-z 0-9 `_` `-` `.`.
pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// The index `key` was first seen at, or `None` (and `i` remembered) when it is new.
pub(crate) fn first_seen(
    seen: &mut std::collections::HashMap<String, usize>,
    key: &str,
    i: usize,
) -> Option<usize> {
    match seen.get(key) {
        Some(&first) => Some(first),
        None => {
            seen.insert(key.to_string(), i);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_http_allowed() {
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://127.9.8.7/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://LOCALHOST/x").is_ok());
        assert!(check_url("http://[::1]:1/").is_ok());
        assert!(check_url("http://10.0.0.1/").is_err());
        assert!(check_url("http://localhost.example.com/").is_err());
        assert!(check_url("https://idp.example.com/").is_ok());
        assert!(check_url("ftp://idp.example.com/").is_err());
        assert!(check_url("idp.example.com").is_err());
    }

    #[test]
    fn urls_keep_their_text() {
        let u: HttpsUrl = "https://idp.example.com".parse().unwrap();
        assert_eq!(u.as_str(), "https://idp.example.com");
        assert_eq!(u.url().as_str(), "https://idp.example.com/");
        assert_eq!(format!("{u:?}"), "\"https://idp.example.com\"");
    }

    #[test]
    fn durations_parse() {
        assert_eq!("1m 30s".parse::<Dur>().unwrap().0, Duration::from_secs(90));
        assert_eq!(
            " 10ms ".parse::<Dur>().unwrap().0,
            Duration::from_millis(10)
        );
        assert!("soon"
            .parse::<Dur>()
            .unwrap_err()
            .contains("invalid duration"));
        assert!("30".parse::<Dur>().is_err());
    }
}
