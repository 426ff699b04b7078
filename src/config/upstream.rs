//! `[upstream.NAME]` (contract §4): a Databricks credential a rule can inject. See
//! docs/databricks.md for the operator's view.
//!
//! Which keys apply: `client_credentials` needs `token_url`, `client_id`,
//! `client_secret_file`; `token_exchange` needs `token_url` and takes an optional `client_id`
//! (workload identity federation) but never a secret; `static` needs `token_file` only;
//! `azure_managed_identity` needs `resource` and takes `client_id` and `imds_url`
//! (docs/azure.md). `client_credentials` authenticates with `client_secret_file` or, instead,
//! `client_assertion_key_file` + `client_assertion_cert_file`. A key that does not apply to
//! the kind is an error.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::files::SecretFile;
use super::host::{DataPlaneHost, DEFAULT_DATA_PLANE_HOSTS};
use super::read::{Cx, Table};
use super::schema_times::{RawSchemaTimes, SchemaTimes, KEYS as SCHEMA_KEYS};
use super::value::{is_name_byte, secs, Dur, HttpsUrl};

/// Upstream names become metric label values and log fields: keep them short and plain.
pub(crate) const MAX_UPSTREAM_NAME: usize = 64;

/// `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    ClientCredentials,
    TokenExchange,
    Static,
    AzureManagedIdentity,
    OnBehalfOf,
}

impl UpstreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKind::ClientCredentials => "client_credentials",
            UpstreamKind::TokenExchange => "token_exchange",
            UpstreamKind::Static => "static",
            UpstreamKind::AzureManagedIdentity => "azure_managed_identity",
            UpstreamKind::OnBehalfOf => "on_behalf_of",
        }
    }
}

/// `data_plane`: whether serving invocations of route-optimized endpoints are sent to their
/// data plane with an endpoint-scoped token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPlaneMode {
    /// Look serving endpoints up; route-optimized ones get `upstream_host`/`upstream_path`
    /// and a data-plane token (the default for the OAuth kinds).
    Auto,
    /// Never: every invocation goes to the workspace host with the workspace token.
    Off,
}

/// What a credential kind needs, present by construction (checked at load).
#[derive(Debug, Clone, PartialEq)]
pub enum Credential {
    ClientCredentials {
        /// OAuth token endpoint, normally `https://<workspace-host>/oidc/v1/token`.
        token_url: HttpsUrl,
        /// The service principal's application ID.
        client_id: String,
        /// File holding the client secret. A relative name is looked up in
        /// `$CREDENTIALS_DIRECTORY` first (systemd `LoadCredential=`), then next to the
        /// configuration file; an absolute path is read as written (see [`super::files`]).
        /// Re-read on every reload.
        auth: ClientAuth,
    },
    TokenExchange {
        token_url: HttpsUrl,
        /// Workload identity federation: the service principal's application ID.
        client_id: Option<String>,
    },
    Static {
        /// File holding the bare bearer token; same lookup as `client_secret_file`.
        token_file: SecretFile,
    },
    /// Entra ID on-behalf-of: the caller's token exchanged for one of the same user for
    /// `scope`, the client authenticated like `client_credentials`.
    OnBehalfOf {
        token_url: HttpsUrl,
        client_id: String,
        auth: ClientAuth,
    },
    /// A token of the Azure VM's managed identity, from the Instance Metadata Service.
    AzureManagedIdentity {
        /// `imds_url`: default [`DEFAULT_IMDS_URL`].
        imds_url: url::Url,
        /// `resource`: the App ID (URI) of the resource the token is for.
        resource: String,
        /// `client_id` of a user-assigned identity; `None`: the system-assigned one.
        client_id: Option<String>,
    },
}

/// How a `client_credentials` client authenticates to its token endpoint.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientAuth {
    /// `client_secret_file`: HTTP Basic `client_id:client_secret`.
    Secret(SecretFile),
    /// `client_assertion_key_file` + `client_assertion_cert_file`: a JWT signed with the key
    /// (RFC 7523 `private_key_jwt`), its certificate's thumbprints in the header (Entra ID).
    PrivateKeyJwt {
        key: SecretFile,
        cert: SecretFile,
        /// `assertion_algorithm`: how the assertion is signed. Default PS256.
        algorithm: AssertionAlgorithm,
    },
}

/// `assertion_algorithm`: the JWS algorithm of a client assertion. Entra ID accepts both
/// (its current documentation shows PS256, older pages RS256); Okta's `private_key_jwt`,
/// Keycloak's "Signed JWT" and most others accept RS256, not always PS256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum AssertionAlgorithm {
    RS256,
    #[default]
    PS256,
}

impl AssertionAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlgorithm::RS256 => "RS256",
            AssertionAlgorithm::PS256 => "PS256",
        }
    }
}

impl From<AssertionAlgorithm> for jsonwebtoken::Algorithm {
    fn from(a: AssertionAlgorithm) -> jsonwebtoken::Algorithm {
        match a {
            AssertionAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            AssertionAlgorithm::PS256 => jsonwebtoken::Algorithm::PS256,
        }
    }
}

/// The Azure Instance Metadata Service's token endpoint.
pub const DEFAULT_IMDS_URL: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Whether `token_url` is a Microsoft Entra ID v2 token endpoint
/// (`https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token`): its tokens are not
/// Databricks workspace tokens, so there is no workspace to derive and no data plane.
pub fn is_entra_token_url(u: &url::Url) -> bool {
    u.path().ends_with("/oauth2/v2.0/token")
}

/// `[upstream.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// `kind` and the keys it needs.
    pub credential: Credential,
    /// Space-separated OAuth scopes. Default `"all-apis"`.
    pub scope: Option<String>,
    /// Timeout of one token request (1ms..=60s, at most `total_budget`). Default 2s.
    pub timeout: Dur,
    /// Total time budget for one credential, retries included. Keep it clearly below the SPOE
    /// `timeout processing` (3s in the shipped idgate.spoe.conf): the budget is spent *inside*
    /// that timeout, and an answer arriving as HAProxy gives up is lost, so the caller gets
    /// the generic "agent unavailable" 503 instead of `upstream_unavailable`. Default 2s.
    pub total_budget: Dur,
    /// Refresh a cached token this long before it expires, in the background (capped at half
    /// the token's lifetime; `"0s"`: no background refresh). Default 5m.
    pub refresh_ahead: Dur,
    /// Maximum cached per-caller tokens (`token_exchange`), and data-plane tokens. Default
    /// 10000.
    pub cache_size: u64,
    /// Route-optimized serving (`off` for `static`: data planes accept only OAuth tokens).
    pub data_plane: DataPlaneMode,
    /// Hosts a data plane may be on ([`super::DEFAULT_DATA_PLANE_HOSTS`] by default).
    pub data_plane_hosts: Vec<DataPlaneHost>,
    /// The workspace whose REST API describes the serving endpoints: as configured, else the
    /// scheme, host and port of `token_url` (`None` for `static`).
    pub workspace_url: Option<url::Url>,
    /// Extra CA certificates (PEM) trusted for this upstream's HTTPS calls.
    pub ca_file: Option<SecretFile>,
    /// How serving endpoints' schemas fetched from the workspace are cached.
    pub schema_times: SchemaTimes,
}

impl UpstreamConfig {
    pub fn kind(&self) -> UpstreamKind {
        match self.credential {
            Credential::ClientCredentials { .. } => UpstreamKind::ClientCredentials,
            Credential::TokenExchange { .. } => UpstreamKind::TokenExchange,
            Credential::Static { .. } => UpstreamKind::Static,
            Credential::AzureManagedIdentity { .. } => UpstreamKind::AzureManagedIdentity,
            Credential::OnBehalfOf { .. } => UpstreamKind::OnBehalfOf,
        }
    }
}

/// An `[upstream.NAME]` table as read, before its checks.
pub(crate) struct RawUpstream {
    pub(crate) kind: UpstreamKind,
    token_url: Option<HttpsUrl>,
    client_id: Option<String>,
    client_secret_file: Option<SecretFile>,
    client_assertion_key_file: Option<SecretFile>,
    client_assertion_cert_file: Option<SecretFile>,
    assertion_algorithm: Option<AssertionAlgorithm>,
    token_file: Option<SecretFile>,
    scope: Option<String>,
    resource: Option<String>,
    imds_url: Option<String>,
    timeout: Dur,
    total_budget: Dur,
    refresh_ahead: Dur,
    cache_size: u64,
    data_plane: Option<DataPlaneMode>,
    data_plane_hosts: Option<Vec<DataPlaneHost>>,
    workspace_url: Option<HttpsUrl>,
    ca_file: Option<SecretFile>,
    schema_times: RawSchemaTimes,
}

impl RawUpstream {
    /// `None` when `kind` is missing (reported). Every key is read either way.
    pub(crate) fn read(t: &mut Table<'_, '_>) -> Option<RawUpstream> {
        let kind = t.required("kind");
        let file = |t: &mut Table<'_, '_>, key| t.get::<PathBuf>(key).map(SecretFile::unresolved);
        let mut c = RawUpstream {
            kind: UpstreamKind::Static,
            token_url: t.get("token_url"),
            client_id: t.get("client_id"),
            client_secret_file: file(t, "client_secret_file"),
            client_assertion_key_file: file(t, "client_assertion_key_file"),
            client_assertion_cert_file: file(t, "client_assertion_cert_file"),
            assertion_algorithm: t.get("assertion_algorithm"),
            token_file: file(t, "token_file"),
            scope: t.get("scope"),
            resource: t.get("resource"),
            imds_url: t.get("imds_url"),
            timeout: secs(2),
            total_budget: secs(2),
            refresh_ahead: secs(300),
            cache_size: 10_000,
            data_plane: t.get("data_plane"),
            data_plane_hosts: t.get("data_plane_hosts"),
            workspace_url: t.get("workspace_url"),
            ca_file: file(t, "ca_file"),
            schema_times: RawSchemaTimes::read(t),
        };
        t.set("timeout", &mut c.timeout);
        t.set("total_budget", &mut c.total_budget);
        t.set("refresh_ahead", &mut c.refresh_ahead);
        t.set("cache_size", &mut c.cache_size);
        c.kind = kind?;
        Some(c)
    }

    /// The checks of upstream `name` and the lookup of its secret file; the typed upstream
    /// when the keys its kind needs are there.
    pub(crate) fn check(mut self, name: &str, cx: &mut Cx<'_>) -> Option<UpstreamConfig> {
        self.check_keys(name, cx);
        let entra = matches!(
            self.kind,
            UpstreamKind::AzureManagedIdentity | UpstreamKind::OnBehalfOf
        ) || self
            .token_url
            .as_ref()
            .is_some_and(|u| is_entra_token_url(u.url()));
        let oauth_url = match self.kind {
            UpstreamKind::Static => None,
            _ if entra => None,
            _ => self.token_url.as_ref().map(|u| u.url().clone()),
        };
        let workspace_url = match (&self.workspace_url, oauth_url) {
            (Some(w), _) => Some(w.url().clone()),
            (None, Some(mut t)) => {
                t.set_path("");
                t.set_query(None);
                t.set_fragment(None);
                Some(t)
            }
            (None, None) => None,
        };
        let data_plane = match self.kind {
            UpstreamKind::Static => DataPlaneMode::Off,
            _ if entra => DataPlaneMode::Off,
            _ => self.data_plane.unwrap_or(DataPlaneMode::Auto),
        };
        let data_plane_hosts = self.data_plane_hosts.take().unwrap_or_else(|| {
            DEFAULT_DATA_PLANE_HOSTS
                .iter()
                .map(|h| h.parse().expect("the defaults parse"))
                .collect()
        });
        let auth = match (
            self.client_secret_file,
            self.client_assertion_key_file,
            self.client_assertion_cert_file,
        ) {
            (Some(f), None, None) => Some(ClientAuth::Secret(f)),
            (None, Some(key), Some(cert)) => Some(ClientAuth::PrivateKeyJwt {
                key,
                cert,
                algorithm: self.assertion_algorithm.unwrap_or_default(),
            }),
            _ => None,
        };
        let credential = match self.kind {
            UpstreamKind::ClientCredentials => Credential::ClientCredentials {
                token_url: self.token_url?,
                client_id: self.client_id?,
                auth: auth?,
            },
            UpstreamKind::OnBehalfOf => Credential::OnBehalfOf {
                token_url: self.token_url?,
                client_id: self.client_id?,
                auth: auth?,
            },
            UpstreamKind::TokenExchange => Credential::TokenExchange {
                token_url: self.token_url?,
                client_id: self.client_id,
            },
            UpstreamKind::Static => Credential::Static {
                token_file: self.token_file?,
            },
            UpstreamKind::AzureManagedIdentity => Credential::AzureManagedIdentity {
                imds_url: match &self.imds_url {
                    Some(u) => check_imds_url(u).ok()?,
                    None => DEFAULT_IMDS_URL.parse().expect("the default parses"),
                },
                resource: self.resource?,
                client_id: self.client_id,
            },
        };
        Some(UpstreamConfig {
            credential,
            scope: self.scope,
            timeout: self.timeout,
            total_budget: self.total_budget,
            refresh_ahead: self.refresh_ahead,
            cache_size: self.cache_size,
            data_plane,
            data_plane_hosts,
            workspace_url,
            ca_file: self.ca_file,
            schema_times: self.schema_times.times(),
        })
    }

    fn check_keys(&mut self, name: &str, cx: &mut Cx<'_>) {
        let k = |field: &str| format!("upstream.{name}.{field}");
        if name.is_empty() || name.len() > MAX_UPSTREAM_NAME || !name.bytes().all(is_name_byte) {
            cx.push(
                format!("upstream.{name}"),
                format!(
                    "the name must be 1-{MAX_UPSTREAM_NAME} characters of A-Z a-z 0-9 _ - . \
                     (it is a metric label)"
                ),
            );
        }
        let kind = self.kind.as_str();
        const ASSERTION: [&str; 3] = [
            "client_assertion_key_file",
            "client_assertion_cert_file",
            "assertion_algorithm",
        ];
        const AZURE_MI: [&str; 2] = ["resource", "imds_url"];
        let (needs, forbids): (&[&str], Vec<&str>) = match self.kind {
            UpstreamKind::ClientCredentials => (
                &["token_url", "client_id"],
                [&["token_file"][..], &AZURE_MI].concat(),
            ),
            UpstreamKind::TokenExchange => (
                &["token_url"],
                [
                    &["client_secret_file", "token_file"][..],
                    &ASSERTION,
                    &AZURE_MI,
                ]
                .concat(),
            ),
            UpstreamKind::Static => (
                &["token_file"],
                [
                    &[
                        "token_url",
                        "client_id",
                        "client_secret_file",
                        "scope",
                        "data_plane",
                        "data_plane_hosts",
                        "workspace_url",
                        "ca_file",
                    ][..],
                    &ASSERTION,
                    &AZURE_MI,
                    &SCHEMA_KEYS,
                ]
                .concat(),
            ),
            UpstreamKind::OnBehalfOf => (
                &["token_url", "client_id", "scope"],
                [
                    &[
                        "token_file",
                        "data_plane",
                        "data_plane_hosts",
                        "workspace_url",
                    ][..],
                    &AZURE_MI,
                    &SCHEMA_KEYS,
                ]
                .concat(),
            ),
            UpstreamKind::AzureManagedIdentity => (
                &["resource"],
                [
                    &[
                        "token_url",
                        "client_secret_file",
                        "token_file",
                        "scope",
                        "data_plane",
                        "data_plane_hosts",
                        "workspace_url",
                        "ca_file",
                    ][..],
                    &ASSERTION,
                    &SCHEMA_KEYS,
                ]
                .concat(),
            ),
        };
        let present = |f: &str| match f {
            "token_url" => self.token_url.is_some(),
            "client_id" => self.client_id.is_some(),
            "client_secret_file" => self.client_secret_file.is_some(),
            "client_assertion_key_file" => self.client_assertion_key_file.is_some(),
            "client_assertion_cert_file" => self.client_assertion_cert_file.is_some(),
            "assertion_algorithm" => self.assertion_algorithm.is_some(),
            "token_file" => self.token_file.is_some(),
            "scope" => self.scope.is_some(),
            "resource" => self.resource.is_some(),
            "imds_url" => self.imds_url.is_some(),
            "data_plane" => self.data_plane.is_some(),
            "data_plane_hosts" => self.data_plane_hosts.is_some(),
            "workspace_url" => self.workspace_url.is_some(),
            "ca_file" => self.ca_file.is_some(),
            f => self.schema_times.has(f),
        };
        for f in needs.iter().filter(|f| !present(f)) {
            cx.push(k(f), format!("required for kind = \"{kind}\""));
        }
        for f in forbids.iter().filter(|f| present(f)) {
            let why = match (self.kind, *f) {
                (UpstreamKind::TokenExchange, "client_secret_file") => {
                    "; token exchange sends no client secret (set client_id alone for \
                     workload identity federation)"
                }
                (UpstreamKind::Static, "data_plane" | "data_plane_hosts" | "workspace_url") => {
                    "; route-optimized serving endpoints accept only OAuth tokens \
                     (use client_credentials or token_exchange)"
                }
                (
                    UpstreamKind::AzureManagedIdentity | UpstreamKind::OnBehalfOf,
                    "data_plane" | "workspace_url",
                ) => "; Entra ID tokens are sent to the workspace as they are (no data plane)",
                (_, f) if SCHEMA_KEYS.contains(&f) => {
                    "; serving endpoint schemas are fetched from the workspace with a \
                     client_credentials or token_exchange credential"
                }
                _ => "",
            };
            cx.push(k(f), format!("does not apply to kind = \"{kind}\"{why}"));
        }
        if matches!(
            self.kind,
            UpstreamKind::ClientCredentials | UpstreamKind::OnBehalfOf
        ) {
            let kind = self.kind.as_str();
            match (
                self.client_secret_file.is_some(),
                self.client_assertion_key_file.is_some(),
                self.client_assertion_cert_file.is_some(),
            ) {
                (true, false, false) | (false, true, true) => {}
                (false, false, false) => cx.push(
                    k("client_secret_file"),
                    format!(
                        "required for kind = \"{kind}\" (or client_assertion_key_file and \
                         client_assertion_cert_file)"
                    ),
                ),
                (true, _, _) => cx.push(
                    k("client_assertion_key_file"),
                    "set either client_secret_file or client_assertion_key_file \
                     (with client_assertion_cert_file), not both",
                ),
                (false, true, false) => cx.push(
                    k("client_assertion_cert_file"),
                    "required with client_assertion_key_file (its thumbprint names the key)",
                ),
                (false, false, true) => cx.push(
                    k("client_assertion_key_file"),
                    "required with client_assertion_cert_file",
                ),
            }
            if self.assertion_algorithm.is_some() && self.client_assertion_key_file.is_none() {
                cx.push(
                    k("assertion_algorithm"),
                    "only with client_assertion_key_file (private_key_jwt)",
                );
            }
            if self.data_plane == Some(DataPlaneMode::Auto)
                && self
                    .token_url
                    .as_ref()
                    .is_some_and(|u| is_entra_token_url(u.url()))
            {
                cx.push(
                    k("data_plane"),
                    "\"auto\" needs a Databricks token endpoint; Entra ID tokens are sent to \
                     the workspace as they are (set \"off\" or leave it out)",
                );
            }
        }
        if let Some(u) = &self.imds_url {
            if let Err(e) = check_imds_url(u) {
                cx.push(k("imds_url"), e);
            }
        }
        if let Some(r) = &self.resource {
            if r.is_empty() || r.len() > 1024 || !r.bytes().all(|b| b.is_ascii_graphic()) {
                cx.push(
                    k("resource"),
                    "must be 1-1024 visible ASCII characters (the resource's App ID or App ID \
                     URI, e.g. \"2ff814a6-3304-4ab8-85cb-cd0e6f879c1d\")",
                );
            }
        }
        // The secret file of the kind: found now, read by the upstream when it is built.
        let files = match self.kind {
            UpstreamKind::ClientCredentials | UpstreamKind::OnBehalfOf => vec![
                ("client_secret_file", self.client_secret_file.as_mut()),
                (
                    "client_assertion_key_file",
                    self.client_assertion_key_file.as_mut(),
                ),
                (
                    "client_assertion_cert_file",
                    self.client_assertion_cert_file.as_mut(),
                ),
            ],
            UpstreamKind::Static => vec![("token_file", self.token_file.as_mut())],
            UpstreamKind::TokenExchange | UpstreamKind::AzureManagedIdentity => vec![],
        };
        for (field, file) in files {
            if let Some(Err(e)) = file.map(|f| f.resolve(&cx.dirs)) {
                cx.push(k(field), e);
            }
        }
        if let Some(ca) = self
            .ca_file
            .as_mut()
            .filter(|_| self.kind != UpstreamKind::Static)
        {
            if let Err(e) = ca
                .resolve(&cx.dirs)
                .and_then(|()| crate::outbound::read_ca_file(ca.path()).map(drop))
            {
                cx.push(k("ca_file"), e);
            }
        }
        if self
            .data_plane_hosts
            .as_ref()
            .is_some_and(|h| h.is_empty() && self.data_plane != Some(DataPlaneMode::Off))
        {
            cx.push(
                k("data_plane_hosts"),
                "is empty: no route-optimized endpoint could be reached (set data_plane = \"off\" \
                 to mean that)",
            );
        }
        if let Some(w) = &self.workspace_url {
            let u = w.url();
            if (u.path() != "/" && !u.path().is_empty()) || u.query().is_some() {
                cx.push(
                    k("workspace_url"),
                    "must be the workspace's scheme and host only, e.g. \"https://dbc.example.com\"",
                );
            }
        }
        if self.kind == UpstreamKind::Static {
            return;
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                cx.push(
                    k("client_id"),
                    "must be 1-256 visible ASCII characters (the service principal's \
                     application ID)",
                );
            }
        }
        if let Some(s) = &self.scope {
            if s.trim().is_empty()
                || s.len() > 1024
                || !s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
            {
                cx.push(
                    k("scope"),
                    "must be space-separated scopes of visible ASCII, e.g. \"all-apis\"",
                );
            }
        }
        let within = |d: Dur, max: u64| !d.0.is_zero() && d.0 <= Duration::from_secs(max);
        if !within(self.timeout, 60) {
            cx.push(k("timeout"), "must be between 1ms and 60s");
        } else if self.timeout.0 > self.total_budget.0 {
            cx.push(
                k("timeout"),
                "must not exceed total_budget (the budget bounds every attempt)",
            );
        }
        if !within(self.total_budget, 300) {
            cx.push(k("total_budget"), "must be between 1ms and 5m");
        }
        self.schema_times.check(k, cx);
        if matches!(
            self.kind,
            UpstreamKind::TokenExchange | UpstreamKind::OnBehalfOf
        ) && self.cache_size == 0
        {
            cx.push(k("cache_size"), "must be at least 1");
        }
    }
}

/// `imds_url`: `http://` only for the metadata address 169.254.169.254 and loopback hosts
/// (tests); anything else must be `https://`.
fn check_imds_url(s: &str) -> Result<url::Url, String> {
    let u = url::Url::parse(s).map_err(|e| format!("invalid URL {s:?}: {e}"))?;
    let metadata = u.host() == Some(url::Host::Ipv4(std::net::Ipv4Addr::new(169, 254, 169, 254)));
    if u.scheme() == "http" && metadata {
        return Ok(u);
    }
    super::value::check_url(s).map_err(|e| {
        format!("{e} (http:// is also allowed for the metadata address 169.254.169.254)")
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{keys, problems};
    use crate::config::Config;

    const URL: &str = "token_url = \"https://dbc.example.com/oidc/v1/token\"\n";

    #[test]
    fn client_credentials_requires_its_keys() {
        assert_eq!(
            keys("[upstream.sp]\nkind = \"client_credentials\"\n"),
            [
                "upstream.sp.token_url",
                "upstream.sp.client_id",
                "upstream.sp.client_secret_file"
            ]
        );
    }

    #[test]
    fn keys_of_other_kinds_are_errors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("tok"), "dapi123\n").unwrap();
        let text = format!(
            "[upstream.st]\nkind = \"static\"\ntoken_file = \"tok\"\n{URL}client_id = \"abc\"\n\
             scope = \"all-apis\"\n\
             [upstream.tx]\nkind = \"token_exchange\"\n{URL}client_secret_file = \"tok\"\n\
             token_file = \"tok\"\n\
             [upstream.cc]\nkind = \"client_credentials\"\n{URL}client_id = \"abc\"\n\
             client_secret_file = \"tok\"\ntoken_file = \"tok\"\n"
        );
        let e = Config::from_toml_in(&text, "t", d.path()).unwrap_err();
        let k: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            k,
            [
                "upstream.st.token_url",
                "upstream.st.client_id",
                "upstream.st.scope",
                "upstream.tx.client_secret_file",
                "upstream.tx.token_file",
                "upstream.cc.token_file",
            ],
            "{e}"
        );
        assert!(e.problems[3].message.contains("no client secret"), "{e}");
    }

    #[test]
    fn urls_names_and_bounds_are_checked() {
        let p = problems(
            "[upstream.\"bad name\"]\nkind = \"token_exchange\"\n\
             token_url = \"https://dbc.example.com/oidc/v1/token\"\nclient_id = \"\"\n\
             scope = \"  \"\ntimeout = \"5s\"\ntotal_budget = \"2s\"\ncache_size = 0\n",
        );
        let k: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            k,
            [
                "upstream.bad name",
                "upstream.bad name.client_id",
                "upstream.bad name.scope",
                "upstream.bad name.timeout",
                "upstream.bad name.cache_size",
            ],
            "{p:#?}"
        );
        let p = problems(
            "[upstream.x]\nkind = \"token_exchange\"\ntoken_url = \"http://dbc.example.com/t\"\n",
        );
        assert_eq!(p[0].key, "upstream.x.token_url");
        assert!(p[0].message.contains("https"), "{}", p[0]);
        assert_eq!(
            keys("[upstream.x]\nkind = \"token_exchange\"\ntoken_url = \"https://d/t\"\ntimeout = \"0s\"\ntotal_budget = \"6m\"\n"),
            ["upstream.x.timeout", "upstream.x.total_budget"]
        );
        assert_eq!(
            keys("[upstream.x]\nkind = \"oauth\"\n"),
            ["upstream.x.kind"]
        );
    }

    #[test]
    fn missing_secret_files_name_the_places_tried() {
        let d = tempfile::tempdir().unwrap();
        let abs = d.path().join("nope");
        let text = format!(
            "[upstream.cc]\nkind = \"client_credentials\"\n{URL}client_id = \"abc\"\n\
             client_secret_file = \"{}\"\n[upstream.st]\nkind = \"static\"\ntoken_file = \"pat\"\n",
            abs.display()
        );
        let e = Config::from_toml_in(&text, "t", d.path()).unwrap_err();
        let shown: Vec<String> = e
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        let creds = match std::env::var_os(crate::config::CREDENTIALS_DIRECTORY_ENV) {
            Some(c) if !c.is_empty() => format!("$CREDENTIALS_DIRECTORY={}, ", c.to_string_lossy()),
            _ => String::new(),
        };
        let unset = if creds.is_empty() {
            "; $CREDENTIALS_DIRECTORY is not set"
        } else {
            ""
        };
        assert_eq!(
            shown,
            [
                format!("upstream.cc.client_secret_file: {abs:?} not found"),
                format!(
                    "upstream.st.token_file: \"pat\" not found (looked in {creds}{}{unset})",
                    d.path().display()
                ),
            ]
        );
    }

    #[test]
    fn data_plane_defaults_and_checks() {
        use crate::config::DataPlaneMode;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("s"), "secret\n").unwrap();
        let text = format!(
            "[upstream.cc]\nkind = \"client_credentials\"\n\
             token_url = \"https://dbc.example.com:8443/oidc/v1/token?x=1\"\n\
             client_id = \"abc\"\nclient_secret_file = \"s\"\n\
             [upstream.tx]\nkind = \"token_exchange\"\n{URL}data_plane = \"off\"\n\
             workspace_url = \"https://ws.example.com\"\n\
             data_plane_hosts = [\"dp.example.com\", \"*.dp.example.net\", \"127.0.0.1\"]\n"
        );
        let cfg = Config::from_toml_in(&text, "t", d.path()).unwrap();
        let cc = &cfg.upstreams["cc"];
        assert_eq!(cc.data_plane, DataPlaneMode::Auto);
        assert_eq!(
            cc.workspace_url.as_ref().unwrap().as_str(),
            "https://dbc.example.com:8443/"
        );
        let shown: Vec<String> = cc.data_plane_hosts.iter().map(|h| h.to_string()).collect();
        assert_eq!(shown, crate::config::DEFAULT_DATA_PLANE_HOSTS);
        let tx = &cfg.upstreams["tx"];
        assert_eq!(tx.data_plane, DataPlaneMode::Off);
        assert_eq!(
            tx.workspace_url.as_ref().unwrap().as_str(),
            "https://ws.example.com/"
        );
        assert_eq!(tx.data_plane_hosts.len(), 3);

        // Values of the wrong shape...
        assert_eq!(
            keys(&format!(
                "[upstream.x]\nkind = \"token_exchange\"\n{URL}data_plane = \"on\"\n\
                 [upstream.y]\nkind = \"token_exchange\"\n{URL}\
                 data_plane_hosts = [\"https://dp.example.com\", \"*.com\"]\n"
            )),
            ["upstream.x.data_plane", "upstream.y.data_plane_hosts"]
        );
        // ...and values that do not make sense.
        assert_eq!(
            keys(&format!(
                "[upstream.x]\nkind = \"token_exchange\"\n{URL}data_plane_hosts = []\n\
                 workspace_url = \"https://ws.example.com/api\"\n\
                 ca_file = \"/nonexistent/ca.pem\"\n"
            )),
            [
                "upstream.x.data_plane_hosts",
                "upstream.x.workspace_url",
                "upstream.x.ca_file",
            ]
        );
        let p = problems(
            "[upstream.st]\nkind = \"static\"\ntoken_file = \"/nonexistent\"\ndata_plane = \"auto\"\n",
        );
        let dp = p
            .iter()
            .find(|p| p.key == "upstream.st.data_plane")
            .unwrap();
        assert!(dp.message.contains("only OAuth tokens"), "{dp}");
    }
}
