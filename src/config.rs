//! Configuration: TOML per contract §4, with serde defaults and a validation pass that reports
//! every problem with its key path.
//!
//! Unknown keys are errors everywhere (`deny_unknown_fields`): a typo in a security policy must
//! not be silently ignored. Durations are strings (`"30s"`, `"10m"`, `"1h 30m"`).
//!
//! Loading is two-phase: [`Config::from_toml`] parses and checks everything that needs no
//! other module; the policy and upstream modules check their own sections when the state is
//! built ([`crate::engine::State::build`]). `idgate check-config` runs both.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The configuration used when `idgate run` is given no file and the default path does not
/// exist: listen on loopback, no issuers, no rules (so every request is refused: fail closed).
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");

/// Default config file path (contract §1).
pub const DEFAULT_PATH: &str = "/etc/idgate/idgate.toml";

/// A duration written as a humantime string in TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Duration {
        d.0
    }
}

const fn secs(s: u64) -> Dur {
    Dur(Duration::from_secs(s))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub spop: SpopConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub paths: PathsConfig,
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleConfig>,
    #[serde(default, rename = "upstream")]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
}

/// `[spop]`: the SPOP listener and its resource bounds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpopConfig {
    /// SPOP listen address: `host:port` (an IP literal) or `unix:/absolute/path` for a Unix
    /// socket. Default `127.0.0.1:12345`. Bound once at start; a reload keeps the old one.
    pub listen: ListenAddr,
    /// Permissions of the Unix socket file, an octal string. Default `"0660"`: owner and
    /// group may connect. Only with a `unix:` listen address.
    pub socket_mode: Option<SocketMode>,
    /// Group of the Unix socket file: a group name or a numeric gid. Default: the process's
    /// group. The agent must be a member of it (or run as root). Only with a `unix:` listen
    /// address.
    pub socket_group: Option<String>,
    /// Owner of the Unix socket file: a user name or a numeric uid. Default: the process's
    /// user. Giving the socket to another user needs root. Only with a `unix:` listen address.
    pub socket_owner: Option<String>,
    /// Maximum concurrent SPOP connections. At the limit a new connection evicts the
    /// connection idle longest (never one with a NOTIFY in flight); when every connection is
    /// busy it is refused. Default 1024.
    pub max_connections: usize,
    /// Maximum NOTIFYs processed concurrently on one connection. HAProxy itself keeps at most
    /// 20 in flight per connection; further frames wait (TCP backpressure). Default 64.
    pub max_inflight_per_connection: usize,
    /// Largest frame we accept (bytes after the 4-byte length). Negotiated down to HAProxy's
    /// value in the HELLO. Range 256..=1048576. Default 16380 (HAProxy's default).
    pub max_frame_size: u32,
    /// Time allowed between accept and a complete HAPROXY-HELLO. HAProxy sends its HELLO as
    /// soon as the connection is up, so this only bounds how long a connection that is not
    /// HAProxy can hold a slot. Default 2s.
    pub hello_timeout: Dur,
    /// A connection with no complete frame for this long is closed (also drops a peer that
    /// sends half a frame and stalls). Default 5m (HAProxy 3.x keeps idle pooled connections).
    pub idle_timeout: Dur,
    /// Grace period for in-flight NOTIFYs on SIGTERM/SIGINT. Default 10s.
    pub shutdown_grace: Dur,
    /// Accept backlog. HAProxy 3.x opens dozens of connections at once after idle. Default 4096.
    pub backlog: u32,
}

impl Default for SpopConfig {
    fn default() -> Self {
        SpopConfig {
            listen: ListenAddr::Tcp("127.0.0.1:12345".parse().expect("valid default")),
            socket_mode: None,
            socket_group: None,
            socket_owner: None,
            max_connections: 1024,
            max_inflight_per_connection: 64,
            max_frame_size: 16380,
            hello_timeout: secs(2),
            idle_timeout: secs(300),
            shutdown_grace: secs(10),
            backlog: 4096,
        }
    }
}

/// The `unix:` prefix of a Unix socket listen address.
pub const UNIX_PREFIX: &str = "unix:";

/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with the final NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// Where the SPOP listener listens: a TCP address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// The socket file's path (absolute, checked at parse time).
    Unix(PathBuf),
}

impl ListenAddr {
    /// `"tcp"` or `"unix"` (the `kind` label of `idgate_spop_listener_info`).
    pub fn kind(&self) -> &'static str {
        match self {
            ListenAddr::Tcp(_) => "tcp",
            ListenAddr::Unix(_) => "unix",
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => a.fmt(f),
            ListenAddr::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddr, String> {
        let Some(path) = s.strip_prefix(UNIX_PREFIX) else {
            return s.parse().map(ListenAddr::Tcp).map_err(|e| {
                format!("invalid socket address {s:?} ({e}): expected ip:port or unix:/path")
            });
        };
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(format!(
                "{s:?}: the Unix socket path must be absolute (unix:/run/idgate/spop.sock)"
            ));
        }
        if p.file_name().is_none() || path.ends_with('/') {
            return Err(format!("{s:?}: the Unix socket path must name a file"));
        }
        if path.len() > MAX_UNIX_PATH || path.contains('\0') {
            return Err(format!(
                "{s:?}: a Unix socket path is at most {MAX_UNIX_PATH} bytes, without NUL"
            ));
        }
        Ok(ListenAddr::Unix(p.to_path_buf()))
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Permission bits of the Unix socket file, written as an octal string (`"0660"`, `"660"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl SocketMode {
    /// Owner and group may connect; nobody else.
    pub const DEFAULT: SocketMode = SocketMode(0o660);

    /// Any local user may connect (connecting to a Unix socket needs write permission).
    pub fn is_world_connectable(self) -> bool {
        self.0 & 0o002 != 0
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl std::str::FromStr for SocketMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SocketMode, String> {
        let digits = s.trim();
        let ok =
            (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(digits, 8) {
            Ok(m) if ok && m <= 0o777 => Ok(SocketMode(m)),
            _ => Err(format!(
                "invalid socket mode {s:?}: expected 3 or 4 octal digits without setuid, setgid \
                 or sticky bits, e.g. \"0660\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The Unix socket's resolved permissions: what the listener applies after `bind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPerms {
    pub mode: SocketMode,
    /// `None`: keep the process's group.
    pub gid: Option<u32>,
    /// `None`: keep the process's user.
    pub uid: Option<u32>,
}

impl SpopConfig {
    /// Resolve `socket_mode`, `socket_group` and `socket_owner` (looking names up in the
    /// user and group databases) and check that the process may apply them. Every problem
    /// is reported with its key. Used by [`Config::validate`] and by the listener at start.
    pub fn socket_perms(&self) -> Result<SocketPerms, Vec<Problem>> {
        let mut problems = Vec::new();
        let gid = self.socket_group.as_deref().and_then(|g| {
            resolve_group(g)
                .map_err(|e| problems.push(Problem::new("spop.socket_group", e)))
                .ok()
        });
        let uid = self.socket_owner.as_deref().and_then(|u| {
            let uid = resolve_user(u)
                .map_err(|e| problems.push(Problem::new("spop.socket_owner", e)))
                .ok()?;
            let me = nix::unistd::geteuid();
            if !me.is_root() && uid != me.as_raw() {
                problems.push(Problem::new(
                    "spop.socket_owner",
                    format!(
                        "{u:?} (uid {uid}) is not the user idgate runs as (uid {me}); only root \
                         can give the socket to another user"
                    ),
                ));
                return None;
            }
            Some(uid)
        });
        if problems.is_empty() {
            Ok(SocketPerms {
                mode: self.socket_mode.unwrap_or(SocketMode::DEFAULT),
                gid,
                uid,
            })
        } else {
            Err(problems)
        }
    }
}

/// A group name or a numeric gid -> gid.
fn resolve_group(g: &str) -> Result<u32, String> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {g:?}")),
        Err(e) => Err(format!("cannot look up group {g:?}: {e}")),
    }
}

/// A user name or a numeric uid -> uid.
fn resolve_user(u: &str) -> Result<u32, String> {
    if let Ok(uid) = u.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(u) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("unknown user {u:?}")),
        Err(e) => Err(format!("cannot look up user {u:?}: {e}")),
    }
}

/// `[admin]`: the HTTP endpoint with `/metrics`, `/live`, `/ready`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
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

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Default level/filter when `RUST_LOG` is not set, e.g. `"info"` or `"info,idgate=debug"`.
    pub level: String,
    /// Where the audit log (one JSON line per decision) goes: `"stderr"` (with the other logs),
    /// `"stdout"`, `"off"`, or a file path. Default `"stderr"`.
    pub audit: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            audit: "stderr".into(),
        }
    }
}

/// `[auth]`: settings shared by all issuers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `realm` of the `WWW-Authenticate` challenge. Default `"idgate"`.
    pub realm: String,
    /// Optional cookie name to take the token from when there is no `Authorization` header.
    pub cookie: Option<String>,
    /// Tokens longer than this are refused as `malformed_token` before decoding. Default 16384:
    /// HAProxy's default `tune.bufsize` (16 KiB) is the real ceiling for a header, and an
    /// Entra ID token with its maximum of 200 groups takes about 11 KB.
    pub max_token_bytes: usize,
    /// Maximum number of validated tokens cached. Default 100000.
    pub token_cache_size: u64,
    /// A cached validation never outlives the token's `exp`, nor this. Default 10m.
    pub token_cache_ttl: Dur,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            realm: "idgate".into(),
            cookie: None,
            max_token_bytes: 16384,
            token_cache_size: 100_000,
            token_cache_ttl: secs(600),
        }
    }
}

/// `[paths]`: how strictly request paths are checked before any rule (docs/policy.md "Paths").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    /// Accept non-ASCII characters in request paths (raw UTF-8 or percent-encoded). Default
    /// `false`: Databricks API paths are ASCII, and upstreams that fold Unicode (case mapping,
    /// NFKC: the Kelvin sign `K` to `k`, fullwidth letters and dots to ASCII) would otherwise
    /// read `/api/2.0/to%E2%84%AAen/create` as a path a deny rule covers. Only for upstreams that
    /// need non-ASCII paths (e.g. file names in the Files API). Even then, characters that Unicode
    /// case mapping or NFKC folds to ASCII, invisible or bidirectional formatting characters and
    /// whitespace at a segment's edges stay refused; it never relaxes any other path rule.
    pub allow_non_ascii: bool,
}

/// `[[issuer]]` (contract §4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    pub name: String,
    /// Exact `iss` value to accept.
    pub issuer: String,
    /// Without it: OIDC discovery at `{issuer}/.well-known/openid-configuration`.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// The token's `aud` must contain one of these. Required, non-empty.
    pub audiences: Vec<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_leeway")]
    pub leeway: Dur,
    /// Claim holding the caller's groups (array of strings or one string); dotted path allowed
    /// (`realm_access.roles`). Default `"groups"`. A mistyped claim makes the token invalid.
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Claim holding the caller's email (string); dotted path allowed. Default `"email"`.
    #[serde(default)]
    pub email_claim: Option<String>,
    /// Maximum `exp - iat` (and `exp - now` when the token has no `iat`). Default 24h.
    #[serde(default = "default_max_lifetime")]
    pub max_token_lifetime: Dur,
    /// Background JWKS refresh interval when the IdP sends no usable Cache-Control. Default 10m.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh: Dur,
    /// Minimum time between two JWKS refetches triggered by an unknown `kid` (scheduled
    /// refreshes do not count). Default 30s; at least 100ms (values below 1s are for tests).
    #[serde(default = "default_kid_refetch")]
    pub unknown_kid_refetch_interval: Dur,
    /// Longest a request waits for the JWKS refetch its unknown `kid` triggered (or for one in
    /// progress). The fetch itself runs on to completion (up to `http_timeout`) in the
    /// background, so a slow IdP costs the request at most this, and the next request with that
    /// `kid` finds the new keys. Default 1s: below the shipped SPOE `timeout processing` (3s), so
    /// idgate answers `unknown_key` itself instead of HAProxy giving up, with room left for an
    /// upstream credential fetch. Between 1ms and 10s.
    #[serde(default = "default_kid_wait")]
    pub unknown_kid_wait: Dur,
    /// Timeout of every HTTP call to this IdP. Default 5s.
    #[serde(default = "default_http_timeout")]
    pub http_timeout: Dur,
    /// Allowed `typ` header values (case-insensitive) when present. Default `["JWT", "at+jwt"]`.
    #[serde(default = "default_typ")]
    pub allowed_typ: Vec<String>,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_leeway() -> Dur {
    secs(30)
}
fn default_max_lifetime() -> Dur {
    secs(24 * 3600)
}
fn default_jwks_refresh() -> Dur {
    secs(600)
}
fn default_kid_refetch() -> Dur {
    secs(30)
}
fn default_kid_wait() -> Dur {
    secs(1)
}
fn default_http_timeout() -> Dur {
    secs(5)
}
fn default_typ() -> Vec<String> {
    vec!["JWT".into(), "at+jwt".into()]
}

/// A value or a list of values (for `claims` conditions).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(toml::Value),
    Many(Vec<toml::Value>),
}

/// `[[rule]]` (contract §4). Conditions are ANDed; lists inside one condition are ORed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub paths: Option<Vec<String>>,
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    #[serde(default)]
    pub groups: Option<Vec<String>>,
    #[serde(default)]
    pub subjects: Option<Vec<String>>,
    #[serde(default)]
    pub emails: Option<Vec<String>>,
    #[serde(default)]
    pub email_domains: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Dotted claim path -> value or list of accepted values.
    #[serde(default)]
    pub claims: Option<BTreeMap<String, OneOrMany>>,
    /// CIDRs (or bare addresses) of the `src` argument.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// Only tokens from these issuers (by `name`).
    #[serde(default)]
    pub issuers: Option<Vec<String>>,
    #[serde(default = "default_effect")]
    pub effect: Effect,
    #[serde(default)]
    pub upstream: Option<String>,
    #[serde(default)]
    pub public: bool,
    /// `"email" | "sub" | "claim:<path>" | "static:<value>"`. Default: email if present, else sub.
    #[serde(default)]
    pub principal: Option<String>,
}

fn default_effect() -> Effect {
    Effect::Allow
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    ClientCredentials,
    TokenExchange,
    Static,
}

/// `[upstream.NAME]` (contract §4). Checked per kind, with the secrets read, by
/// [`crate::upstream::Broker::new`]; see docs/databricks.md for the operator's view.
///
/// Which fields apply: `client_credentials` needs `token_url`, `client_id`,
/// `client_secret_file`; `token_exchange` needs `token_url` and takes an optional `client_id`
/// (workload identity federation) but never a secret; `static` needs `token_file` only.
/// A field that does not apply to the kind is an error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    /// OAuth token endpoint, normally `https://<workspace-host>/oidc/v1/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The service principal's application ID (`client_credentials`; `token_exchange` with
    /// workload identity federation).
    #[serde(default)]
    pub client_id: Option<String>,
    /// File holding the client secret (`client_credentials`). A relative name is looked up in
    /// `$CREDENTIALS_DIRECTORY` first (systemd `LoadCredential=`), then relative to the working
    /// directory; an absolute path is read as written. Re-read on every reload.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// File holding the bare bearer token (`static`); same lookup as `client_secret_file`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Space-separated OAuth scopes. Default `"all-apis"`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Timeout of one token request (1ms..=60s, at most `total_budget`). Default 2s.
    #[serde(default = "default_upstream_timeout")]
    pub timeout: Dur,
    /// Total time budget for one credential, retries included. Keep it clearly below the SPOE
    /// `timeout processing` (3s in the shipped idgate.spoe.conf): the budget is spent *inside*
    /// that timeout, and an answer arriving as HAProxy gives up is lost, so the caller gets
    /// the generic "agent unavailable" 503 instead of `upstream_unavailable`. Default 2s.
    #[serde(default = "default_upstream_budget")]
    pub total_budget: Dur,
    /// Refresh a cached token this long before it expires, in the background (capped at half
    /// the token's lifetime; `"0s"`: no background refresh). Default 5m.
    #[serde(default = "default_refresh_ahead")]
    pub refresh_ahead: Dur,
    /// Maximum cached per-caller tokens (`token_exchange`). Default 10000.
    #[serde(default = "default_upstream_cache")]
    pub cache_size: u64,
}

fn default_upstream_timeout() -> Dur {
    secs(2)
}
fn default_upstream_budget() -> Dur {
    secs(2)
}
fn default_refresh_ahead() -> Dur {
    secs(300)
}
fn default_upstream_cache() -> u64 {
    10_000
}

/// One configuration problem: where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `rule[2].paths[0]` or `upstream.serving-sp.token_url`.
    pub key: String,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
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
    /// Parse and validate a TOML document. `source` names it in error messages.
    pub fn from_toml(text: &str, source: &str) -> Result<Config, ConfigError> {
        let cfg = Config::parse_unvalidated(text, source)?;
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError {
                source: source.to_string(),
                problems,
            })
        }
    }

    /// Parse only (syntax, types, unknown keys), without [`Config::validate`]: lets
    /// `idgate check-config` report the problems of every section in one run.
    pub fn parse_unvalidated(text: &str, source: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            source: source.to_string(),
            problems: vec![toml_problem(&e, text)],
        })
    }

    /// Read and validate a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source: source.clone(),
            problems: vec![Problem::new("(file)", format!("cannot read: {e}"))],
        })?;
        Config::from_toml(&text, &source)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::from_toml(EMBEDDED_DEFAULT, "<embedded default>")
            .expect("the embedded default config is valid (tested)")
    }

    /// Checks that need nothing but this file. Returns every problem found.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        let s = &self.spop;
        if !(256..=1_048_576).contains(&s.max_frame_size) {
            p.push(Problem::new(
                "spop.max_frame_size",
                "must be between 256 and 1048576",
            ));
        }
        if s.max_connections == 0 {
            p.push(Problem::new("spop.max_connections", "must be at least 1"));
        }
        if s.max_inflight_per_connection == 0 {
            p.push(Problem::new(
                "spop.max_inflight_per_connection",
                "must be at least 1",
            ));
        }
        match &s.listen {
            ListenAddr::Unix(_) => {
                if let Err(problems) = s.socket_perms() {
                    p.extend(problems);
                }
            }
            ListenAddr::Tcp(_) => {
                for (key, set) in [
                    ("spop.socket_mode", s.socket_mode.is_some()),
                    ("spop.socket_group", s.socket_group.is_some()),
                    ("spop.socket_owner", s.socket_owner.is_some()),
                ] {
                    if set {
                        p.push(Problem::new(
                            key,
                            "only applies to a Unix socket (spop.listen = \"unix:/path\")",
                        ));
                    }
                }
            }
        }
        for (key, d) in [
            ("spop.hello_timeout", s.hello_timeout),
            ("spop.idle_timeout", s.idle_timeout),
        ] {
            if d.0.is_zero() {
                p.push(Problem::new(key, "must be greater than zero"));
            }
        }
        // Checked here, not only when logging starts, so that a reload with a bad level is
        // refused as a whole (and counted as a failure) like any other bad value.
        if let Err(e) = crate::telemetry::validate_level(&self.log.level) {
            p.push(Problem::new("log.level", e.to_string()));
        }
        if self.auth.max_token_bytes < 64 || self.auth.max_token_bytes > 65536 {
            p.push(Problem::new(
                "auth.max_token_bytes",
                "must be between 64 and 65536",
            ));
        }
        if let Some(c) = &self.auth.cookie {
            if c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';')
            {
                p.push(Problem::new("auth.cookie", "not a valid cookie name"));
            }
        }
        if self.auth.realm.contains('"') || self.auth.realm.chars().any(char::is_control) {
            p.push(Problem::new(
                "auth.realm",
                "must not contain quotes or control characters",
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut issuer_urls = std::collections::HashSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            let k = format!("issuer[{i}]");
            if iss.name.is_empty() || !iss.name.bytes().all(is_name_byte) {
                p.push(Problem::new(
                    format!("{k}.name"),
                    "must be non-empty and only contain A-Z a-z 0-9 _ - .",
                ));
            }
            if !names.insert(iss.name.as_str()) {
                p.push(Problem::new(
                    format!("{k}.name"),
                    format!("duplicate issuer name {:?}", iss.name),
                ));
            }
            if let Err(e) = check_url(&iss.issuer) {
                p.push(Problem::new(format!("{k}.issuer"), e));
            }
            if let Some(u) = &iss.jwks_uri {
                if let Err(e) = check_url(u) {
                    p.push(Problem::new(format!("{k}.jwks_uri"), e));
                }
            }
            if iss.audiences.is_empty() || iss.audiences.iter().any(String::is_empty) {
                p.push(Problem::new(
                    format!("{k}.audiences"),
                    "required: at least one non-empty audience",
                ));
            }
            if iss.algorithms.is_empty() {
                p.push(Problem::new(
                    format!("{k}.algorithms"),
                    "must list at least one algorithm",
                ));
            }
            for (j, a) in iss.algorithms.iter().enumerate() {
                if !SUPPORTED_ALGORITHMS.contains(&a.as_str()) {
                    p.push(Problem::new(
                        format!("{k}.algorithms[{j}]"),
                        format!(
                            "{a:?} is not allowed (supported: {})",
                            SUPPORTED_ALGORITHMS.join(", ")
                        ),
                    ));
                }
            }
            if iss.leeway.0 > Duration::from_secs(300) {
                p.push(Problem::new(format!("{k}.leeway"), "at most 5m"));
            }
            if iss.max_token_lifetime.0.is_zero() {
                p.push(Problem::new(
                    format!("{k}.max_token_lifetime"),
                    "must be greater than zero",
                ));
            }
            if iss.jwks_refresh.0 < Duration::from_secs(10) {
                p.push(Problem::new(format!("{k}.jwks_refresh"), "at least 10s"));
            }
            if iss.unknown_kid_refetch_interval.0 < Duration::from_millis(100) {
                p.push(Problem::new(
                    format!("{k}.unknown_kid_refetch_interval"),
                    "at least 100ms",
                ));
            }
            if iss.unknown_kid_wait.0.is_zero() || iss.unknown_kid_wait.0 > Duration::from_secs(10)
            {
                p.push(Problem::new(
                    format!("{k}.unknown_kid_wait"),
                    "must be between 1ms and 10s",
                ));
            }
            if !issuer_urls.insert(iss.issuer.as_str()) {
                p.push(Problem::new(
                    format!("{k}.issuer"),
                    format!(
                        "issuer {:?} is configured twice (a token's iss must select exactly one issuer)",
                        iss.issuer
                    ),
                ));
            }
            for (what, path) in [
                ("groups_claim", &iss.groups_claim),
                ("email_claim", &iss.email_claim),
            ] {
                if path
                    .as_deref()
                    .is_some_and(|c| crate::claim_path::ClaimPath::parse(c).is_err())
                {
                    p.push(Problem::new(
                        format!("{k}.{what}"),
                        "must be a claim name or a dotted path without empty segments",
                    ));
                }
            }
            if iss.allowed_typ.iter().any(|t| t.is_empty()) {
                p.push(Problem::new(
                    format!("{k}.allowed_typ"),
                    "entries must not be empty",
                ));
            }
            if iss.http_timeout.0.is_zero() || iss.http_timeout.0 > Duration::from_secs(60) {
                p.push(Problem::new(
                    format!("{k}.http_timeout"),
                    "must be between 1ms and 60s",
                ));
            }
        }
        p
    }
}

/// Algorithms an issuer may allow. HMAC and `none` are never accepted from a JWKS.
pub const SUPPORTED_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// Contract §4: URLs must be `https://`, except for loopback hosts where `http://` is accepted.
pub fn check_url(s: &str) -> Result<url::Url, String> {
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

/// A parse or type error as one problem: key path and position, e.g.
/// `spop.hello_timeout (line 3, column 17): invalid duration "soon"`. toml reports a byte span
/// (and keeps the key path private), so both are recovered from the text: operators fix files
/// by key and line, not by byte offset.
fn toml_problem(e: &toml::de::Error, text: &str) -> Problem {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return Problem::new("(document)", msg);
    };
    let start = span.start.min(text.len());
    let (line, column) = line_column(text, start);
    let at = format!("line {line}, column {column}");
    match key_at(text, start) {
        Some(key) => Problem::new(format!("{key} ({at})"), msg),
        None => Problem::new(format!("({at})"), msg),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, text[line_start..offset].chars().count() + 1)
}

/// The dotted key path (`issuer[1].audiences`, `upstream.sp.token_url`) of the key whose line
/// holds byte `offset`, or of the nearest key line above it in the same table (multi-line
/// arrays); the table itself when `offset` is on a table header. Best effort: `None` when
/// the text does not look like one key per line.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    let mut key: Option<String> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > offset {
            break;
        }
        pos += line.len();
        let t = line.trim();
        if let Some(h) = t.strip_prefix("[[") {
            let name = unquote(h.split("]]").next().unwrap_or(""));
            let n = arrays
                .entry(name.clone())
                .and_modify(|n| *n += 1)
                .or_insert(0);
            table = format!("{name}[{n}]");
            key = None;
        } else if let Some(h) = t.strip_prefix('[') {
            table = unquote(h.split(']').next().unwrap_or(""));
            key = None;
        } else if let Some((k, _)) = t.split_once('=') {
            let k = k.trim();
            let bare = |c: char| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c);
            if !k.is_empty() && !t.starts_with('#') && k.chars().all(bare) {
                key = Some(unquote(k));
            }
        }
    }
    match (key, table.is_empty()) {
        (Some(k), true) => Some(k),
        (Some(k), false) => Some(format!("{table}.{k}")),
        (None, false) => Some(table),
        (None, true) => None,
    }
}

/// `a . "b c"` -> `a.b c`.
fn unquote(k: &str) -> String {
    k.split('.')
        .map(|p| p.trim().trim_matches(|c| c == '"' || c == '\''))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded();
        assert_eq!(c.spop.listen.to_string(), "127.0.0.1:12345");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9180");
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e =
            Config::from_toml("[spop]\nlisten = \"127.0.0.1:1\"\nlsten = 1\n", "t").unwrap_err();
        assert!(e.to_string().contains("lsten"), "{e}");
    }

    #[test]
    fn bad_issuer_values_are_all_reported() {
        let e = Config::from_toml(
            r#"
[[issuer]]
name = "a b"
issuer = "http://idp.example.com"
audiences = []
algorithms = ["HS256", "none"]
leeway = "10m"
"#,
            "t",
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"issuer[0].name"));
        assert!(keys.contains(&"issuer[0].issuer"));
        assert!(keys.contains(&"issuer[0].audiences"));
        assert!(keys.contains(&"issuer[0].algorithms[0]"));
        assert!(keys.contains(&"issuer[0].algorithms[1]"));
        assert!(keys.contains(&"issuer[0].leeway"));
    }

    #[test]
    fn issuer_identity_rules() {
        let e = Config::from_toml(
            r#"
[[issuer]]
name = "a"
issuer = "https://idp.example.com"
audiences = ["x"]
groups_claim = "realm..roles"
unknown_kid_refetch_interval = "10ms"
unknown_kid_wait = "0s"
allowed_typ = [""]
[[issuer]]
name = "b"
issuer = "https://idp.example.com"
audiences = ["y"]
unknown_kid_wait = "11s"
"#,
            "t",
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"issuer[0].groups_claim"), "{keys:?}");
        assert!(keys.contains(&"issuer[0].unknown_kid_refetch_interval"));
        assert!(keys.contains(&"issuer[0].unknown_kid_wait"));
        assert!(keys.contains(&"issuer[1].unknown_kid_wait"));
        assert!(keys.contains(&"issuer[0].allowed_typ"));
        assert!(keys.contains(&"issuer[1].issuer"), "duplicate iss");
    }

    #[test]
    fn loopback_http_allowed() {
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://[::1]:1/").is_ok());
        assert!(check_url("http://10.0.0.1/").is_err());
        assert!(check_url("https://idp.example.com/").is_ok());
        assert!(check_url("ftp://idp.example.com/").is_err());
    }

    #[test]
    fn parse_errors_name_the_key_and_line() {
        let e = Config::from_toml("[spop]\nlsten = \"127.0.0.1:1\"\n", "t").unwrap_err();
        assert_eq!(e.problems[0].key, "spop.lsten (line 2, column 1)", "{e}");
        let text = "[log]\nlevel = \"info\"\n\n[[issuer]]\nname = \"a\"\nissuer = \"https://a\"\n\
                    audiences = [\"x\"]\n[[issuer]]\nname = \"b\"\nissuer = \"https://b\"\n\
                    audiences = [\"y\"]\nleeway = \"soon\"\n";
        let e = Config::from_toml(text, "t").unwrap_err();
        assert_eq!(
            e.problems[0].key, "issuer[1].leeway (line 12, column 10)",
            "{e}"
        );
        assert!(e.problems[0].message.contains("invalid duration"), "{e}");
        // A value inside a multi-line array belongs to the key above it.
        let text = "[[rule]]\nname = \"r\"\npaths = [\n  \"/a\",\n  7,\n]\n";
        let e = Config::from_toml(text, "t").unwrap_err();
        assert!(
            e.problems[0].key.starts_with("rule[0].paths (line 5"),
            "{e}"
        );
        // Syntax errors without a key still say where.
        let e = Config::from_toml("[spop\n", "t").unwrap_err();
        assert!(e.problems[0].key.contains("line 1"), "{e}");
        assert!(!e.problems[0].message.contains('\n'));
    }

    #[test]
    fn spop_listen_takes_a_unix_socket_path() {
        let c =
            Config::from_toml("[spop]\nlisten = \"unix:/run/idgate/spop.sock\"\n", "t").unwrap();
        assert_eq!(
            c.spop.listen,
            ListenAddr::Unix(PathBuf::from("/run/idgate/spop.sock"))
        );
        assert_eq!(c.spop.listen.to_string(), "unix:/run/idgate/spop.sock");
        assert_eq!(c.spop.listen.kind(), "unix");
        let perms = c.spop.socket_perms().unwrap();
        assert_eq!(perms.mode, SocketMode(0o660));
        assert_eq!((perms.uid, perms.gid), (None, None));
        for bad in [
            "unix:run/spop.sock",
            "unix:",
            "unix:/run/idgate/",
            &format!("unix:/{}", "a".repeat(MAX_UNIX_PATH)),
            "localhost:12345",
        ] {
            let e = Config::from_toml(&format!("[spop]\nlisten = \"{bad}\"\n"), "t").unwrap_err();
            assert!(
                e.problems[0].key.starts_with("spop.listen (line 2"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn socket_keys_are_checked() {
        let unix = "[spop]\nlisten = \"unix:/tmp/x.sock\"\n";
        let c = Config::from_toml(
            &format!(
                "{unix}socket_mode = \"600\"\nsocket_group = \"0\"\nsocket_owner = \"{}\"\n",
                nix::unistd::geteuid()
            ),
            "t",
        )
        .unwrap();
        let perms = c.spop.socket_perms().unwrap();
        assert_eq!(perms.mode, SocketMode(0o600));
        assert_eq!(perms.gid, Some(0));
        assert_eq!(perms.uid, Some(nix::unistd::geteuid().as_raw()));
        for bad in ["0o660", "66", "01777", "0888", "rw-rw----", ""] {
            let e =
                Config::from_toml(&format!("{unix}socket_mode = \"{bad}\"\n"), "t").unwrap_err();
            assert_eq!(e.problems.len(), 1, "{e}");
            assert!(
                e.problems[0].key.starts_with("spop.socket_mode (line 3"),
                "{bad}: {e}"
            );
            assert!(e.problems[0].message.contains("invalid socket mode"), "{e}");
        }
        let e = Config::from_toml(
            &format!("{unix}socket_group = \"no-such-group-idgate\"\nsocket_owner = \"no-such-user-idgate\"\n"),
            "t",
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["spop.socket_group", "spop.socket_owner"], "{e}");
        assert!(e.problems[0].message.contains("unknown group"), "{e}");
        // The socket keys mean nothing for a TCP listener: a mistake, not silently ignored.
        let e = Config::from_toml(
            "[spop]\nsocket_mode = \"0660\"\nsocket_group = \"0\"\n",
            "t",
        )
        .unwrap_err();
        let keys: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["spop.socket_mode", "spop.socket_group"], "{e}");
    }

    #[test]
    fn socket_owner_other_than_self_needs_root() {
        let me = nix::unistd::geteuid();
        let other = if me.is_root() { 1 } else { me.as_raw() + 1 };
        let text = format!("[spop]\nlisten = \"unix:/tmp/x.sock\"\nsocket_owner = \"{other}\"\n");
        let r = Config::from_toml(&text, "t");
        if me.is_root() {
            assert_eq!(r.unwrap().spop.socket_perms().unwrap().uid, Some(other));
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.problems[0].key, "spop.socket_owner", "{e}");
            assert!(e.problems[0].message.contains("only root"), "{e}");
        }
    }

    #[test]
    fn durations_parse() {
        let c = Config::from_toml("[spop]\nhello_timeout = \"1m 30s\"\n", "t").unwrap();
        assert_eq!(c.spop.hello_timeout.0, Duration::from_secs(90));
        assert!(Config::from_toml("[spop]\nhello_timeout = \"soon\"\n", "t").is_err());
    }
}
