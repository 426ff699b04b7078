//! Configuration: TOML per contract §4, read into typed values and checked in one place.
//!
//! Loading ([`Config::load`], [`Config::from_toml`]) has three steps, and reports every problem
//! it finds, each once, as `key (line L, column C): why`:
//! 1. TOML syntax. An error here stops loading (the document has no reliable structure), but
//!    every syntax error toml's parser can recover from is reported, each with its position.
//! 2. Reading ([`read`]): each section reads its keys one by one into typed values:
//!    durations ([`Dur`]), URLs that must be `https://` or loopback `http://` ([`HttpsUrl`]),
//!    JWS algorithms ([`Algorithm`], where `none` and HMAC cannot be written), socket
//!    addresses and modes, path patterns ([`PathGlob`]), CIDRs, claim paths, principals...
//!    A value of the wrong shape and an unknown key (a typo in a security policy must not be
//!    silently ignored) are reported with their exact key path, `rule[3].paths[1]`,
//!    `upstream.serving-sp.token_url`, `issuer[0].algorithms[2]`; reading goes on.
//! 3. Checks: ranges, required combinations, references between sections (a rule's
//!    `upstream`, `issuers`), duplicates, and where each `*_file` is ([`files`]). They run
//!    on every table that was read without a problem.
//!
//! What loading returns is valid: the policy, authenticator and upstream broker built from it
//! ([`crate::engine::State::build`]) check nothing again. The upstream still reads its secret
//! files then, and reports a file it cannot use (empty, unreadable...).
//!
//! One module per section: [`spop`], [`admin`], [`log`], [`auth`], [`paths`], [`issuer`],
//! [`rule`] (its conditions in [`cond`] and [`glob`]), [`upstream`], [`shared`].

mod admin;
mod auth;
mod claim_glob;
mod cond;
mod files;
mod glob;
mod hints;
mod host;
mod introspection;
mod issuer;
mod issuer_id;
mod log;
mod paths;
mod payload;
mod read;
mod rule;
mod schema_times;
mod shared;
mod spop;
mod upstream;
mod value;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;

pub use admin::AdminConfig;
pub use auth::AuthConfig;
pub use claim_glob::{ClaimGlob, MAX_GLOB_BYTES};
pub use cond::{
    Cidr, ClaimPath, ClaimValue, Email, EmailDomain, HostPattern, Method, NonEmpty, Principal,
    Scope,
};
pub use files::{SecretFile, CREDENTIALS_DIRECTORY_ENV};
pub use glob::{GlobSeg, GlobShape, PathGlob};
pub use hints::issuer_hints;
pub use host::{DataPlaneHost, DEFAULT_DATA_PLANE_HOSTS};
pub use introspection::{IntrospectionAuth, IntrospectionConfig, IssuerSource};
pub use issuer::{Algorithm, IssuerConfig};
pub use issuer_id::{is_guid, IssuerId, IssuerKind, TenantId, TENANT_PLACEHOLDER};
pub use log::LogConfig;
pub use paths::PathsConfig;
pub use rule::{Effect, RuleConfig, MAX_RULE_NAME};
pub use schema_times::SchemaTimes;
pub use shared::{RedisTarget, RevocationStore, SharedConfig};
pub use spop::{ListenAddr, SocketMode, SocketPerms, SpopConfig, MAX_UNIX_PATH, UNIX_PREFIX};
pub(crate) use upstream::MAX_UPSTREAM_NAME;
pub use upstream::{
    is_entra_token_url, AssertionAlgorithm, ClientAuth, Credential, DataPlaneMode, UpstreamConfig,
    UpstreamKind, DEFAULT_IMDS_URL,
};
pub(crate) use value::check_url;
pub use value::{Dur, HttpsUrl};

use files::FileDirs;
use read::{Cx, Table};

/// The configuration used when `idgate run` is given no file and the default path does not
/// exist: listen on loopback, no issuers, no rules (so every request is refused: fail closed).
pub const EMBEDDED_DEFAULT: &str = include_str!("../default.toml");

/// Default config file path (contract §1).
pub const DEFAULT_PATH: &str = "/etc/idgate/idgate.toml";

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub spop: SpopConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub paths: PathsConfig,
    /// `[[issuer]]`, in file order.
    pub issuers: Vec<IssuerConfig>,
    /// `[[rule]]`, in file order.
    pub rules: Vec<RuleConfig>,
    /// `[upstream.NAME]`, by name.
    pub upstreams: std::collections::BTreeMap<String, UpstreamConfig>,
    /// `[shared]`: the fleet's shared store, or the local revocations file.
    pub shared: SharedConfig,
}

/// A line and column (1-based, columns in characters) in the configuration text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One configuration problem: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `rule[2].paths[0]` or `upstream.serving-sp.token_url`; `(syntax)` for
    /// a TOML syntax error, `(file)` when the file cannot be read.
    pub key: String,
    pub message: String,
    /// Where in the file, when known.
    pub at: Option<Position>,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem::located(key, message, None)
    }

    pub(crate) fn located(
        key: impl Into<String>,
        message: impl Into<String>,
        at: Option<Position>,
    ) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
            at,
        }
    }
}

impl fmt::Display for Problem {
    /// `key (line L, column C): message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(at) = self.at {
            write!(f, " (line {}, column {})", at.line, at.column)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<embedded default>`).
    pub source: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    /// One line per problem: `file: key (line L, column C): why`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {p}", self.source)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Load a TOML document that is not in a file. `source` names it in error messages.
    /// Relative `*_file` names are looked up in `$CREDENTIALS_DIRECTORY` only.
    pub fn from_toml(text: &str, source: &str) -> Result<Config, ConfigError> {
        Config::parse(text, source, FileDirs::from_env(None))
    }

    /// [`Config::from_toml`] for a document that belongs in `dir`: relative `*_file` names
    /// are looked up in `$CREDENTIALS_DIRECTORY`, then in `dir`.
    pub fn from_toml_in(text: &str, source: &str, dir: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, source, FileDirs::from_env(Some(dir)))
    }

    /// Read and load a file. Relative `*_file` names are looked up in
    /// `$CREDENTIALS_DIRECTORY`, then in the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            problems: vec![Problem::new("(file)", format!("cannot read: {e}"))],
        })?;
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Config::parse(&text, &source, FileDirs::from_env(absolute.parent()))
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::from_toml(EMBEDDED_DEFAULT, "<embedded default>")
            .expect("the embedded default config is valid (tested)")
    }

    fn parse(text: &str, source: &str, dirs: FileDirs) -> Result<Config, ConfigError> {
        let mut cx = Cx::new(text, dirs);
        let config = load(text, &mut cx);
        match config {
            Some(c) if !cx.has_problems() => Ok(c),
            _ => Err(ConfigError {
                source: source.to_string(),
                problems: cx.into_problems(),
            }),
        }
    }
}

/// The three steps of the module docs. `None` (with problems in `cx`) when a table could not
/// be read.
fn load<'i>(text: &'i str, cx: &mut Cx<'i>) -> Option<Config> {
    let (doc, errors) = toml::de::DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        let mut seen = HashSet::new();
        for e in errors {
            let offset = e.span().map_or(0, |s| s.start);
            if seen.insert((offset, e.message().to_string())) {
                cx.push_at("(syntax)", offset, e.message());
            }
        }
        return None;
    }
    let mut root = Table::document(cx, doc.into_inner());
    let spop = root.table("spop", SpopConfig::read);
    let admin = root.table("admin", AdminConfig::read);
    let log = root.table("log", LogConfig::read);
    let auth = root.table("auth", AuthConfig::read);
    let paths = root.table("paths", PathsConfig::read);
    let mut shared = root.table("shared", SharedConfig::read);
    let mut issuers: Vec<_> = root
        .tables("issuer", IssuerConfig::read)
        .into_iter()
        .map(Option::flatten)
        .collect();
    let rules: Vec<_> = root
        .tables("rule", RuleConfig::read)
        .into_iter()
        .map(Option::flatten)
        .collect();
    let upstreams: Vec<_> = root
        .named_tables("upstream", |_, t| upstream::RawUpstream::read(t))
        .into_iter()
        .map(|(name, u)| (name, u.flatten()))
        .collect();
    root.finish();

    if let Some(s) = &spop {
        s.check(cx);
    }
    if let Some(l) = &log {
        l.check(cx);
    }
    if let Some(a) = &auth {
        a.check(cx);
    }
    if let Some(s) = &mut shared {
        s.check(cx);
    }
    let mut seen = issuer::Seen::default();
    for (i, iss) in issuers.iter_mut().enumerate() {
        if let Some(iss) = iss {
            iss.check(i, &mut seen, cx);
        }
    }
    let kinds: Vec<(String, Option<UpstreamKind>)> = upstreams
        .iter()
        .map(|(n, u)| (n.clone(), u.as_ref().map(|u| u.kind)))
        .collect();
    let upstreams: Vec<(String, Option<UpstreamConfig>)> = upstreams
        .into_iter()
        .map(|(name, u)| {
            let checked = u.and_then(|u| u.check(&name, cx));
            (name, checked)
        })
        .collect();
    let ctx = rule::RuleContext {
        issuers: issuers
            .iter()
            .map(|i| i.as_ref().map(|i| i.name.as_str()))
            .collect(),
        upstreams: kinds.iter().map(|(n, k)| (n.as_str(), *k)).collect(),
        allow_non_ascii: paths.map(|p| p.allow_non_ascii),
    };
    let mut names = HashMap::new();
    for (i, r) in rules.iter().enumerate() {
        if let Some(r) = r {
            r.check(i, &mut names, &ctx, cx);
        }
    }
    Some(Config {
        spop: spop?,
        admin: admin?,
        log: log?,
        auth: auth?,
        paths: paths?,
        shared: shared?,
        issuers: issuers.into_iter().collect::<Option<_>>()?,
        rules: rules.into_iter().collect::<Option<_>>()?,
        upstreams: upstreams
            .into_iter()
            .map(|(n, u)| u.map(|u| (n, u)))
            .collect::<Option<_>>()?,
    })
}

#[cfg(test)]
pub(crate) mod tests;
