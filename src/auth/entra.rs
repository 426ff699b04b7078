//! Microsoft Entra ID specifics: multi-tenant issuers (`{tenantid}` templates, checked against
//! the token's `tid`) and Microsoft Graph access tokens (a `nonce` in the JOSE header), which
//! no one but Graph can validate. Pure: no I/O.

// `IssMatch` is part of `ClaimRules`, which the fuzz targets build (re-exported by
// `auth::fuzzing`); without them it is crate-internal.
#![cfg_attr(not(any(fuzzing, feature = "fuzzing")), allow(unreachable_pub))]

use super::jose::Claims;
use crate::config::{is_guid, IssuerConfig};
use crate::decision::{Reason, Rejection};

/// The claim holding an Entra ID token's tenant id.
pub(crate) const TID: &str = "tid";

/// Microsoft Graph's application id and URI: the `aud` of a Graph access token (v1 tokens use
/// the URI or the id, depending on how the client asked).
const GRAPH_AUDIENCES: &[&str] = &[
    "00000003-0000-0000-c000-000000000000",
    "https://graph.microsoft.com",
    "https://graph.microsoft.com/",
];

/// Which `iss` values an issuer accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssMatch {
    /// Exactly this value (a URL or a bare host name).
    Exact(String),
    /// `{prefix}{tid}{suffix}`, where `tid` is the token's `tid` claim, a GUID, and (when
    /// `tenants` is set) one of those, compared ASCII case-insensitively.
    Tenant {
        prefix: String,
        suffix: String,
        /// Lowercase GUIDs; `None`: any tenant.
        tenants: Option<Vec<String>>,
    },
}

/// Why a token whose `iss` has a template's shape is not accepted by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TenantRefusal {
    /// `tid` is missing, not a string, or not the tenant in `iss`.
    TidMismatch,
    /// The tenant is not in the issuer's `tenants`.
    NotAllowed,
}

impl TenantRefusal {
    pub(crate) fn rejection(self) -> Rejection {
        match self {
            TenantRefusal::TidMismatch => Rejection::new(
                Reason::ClaimInvalid,
                "tid claim missing or not the tenant named in iss",
            ),
            TenantRefusal::NotAllowed => Rejection::new(
                Reason::UnknownIssuer,
                "token tenant is not accepted by this issuer",
            ),
        }
    }
}

impl IssMatch {
    pub fn from_config(cfg: &IssuerConfig) -> IssMatch {
        match cfg.issuer.template_parts() {
            None => IssMatch::Exact(cfg.issuer.as_str().to_owned()),
            Some((prefix, suffix)) => IssMatch::Tenant {
                prefix: prefix.to_owned(),
                suffix: suffix.to_owned(),
                tenants: cfg
                    .tenants
                    .as_ref()
                    .map(|t| t.iter().map(|t| t.as_str().to_owned()).collect()),
            },
        }
    }

    /// For a template: the tenant `iss` names, when `iss` has the template's shape with a GUID
    /// in the placeholder's place. `None` for an exact issuer.
    #[inline]
    pub(crate) fn tenant_in<'a>(&self, iss: &'a str) -> Option<&'a str> {
        let IssMatch::Tenant { prefix, suffix, .. } = self else {
            return None;
        };
        let t = iss
            .strip_prefix(prefix.as_str())?
            .strip_suffix(suffix.as_str())?;
        is_guid(t).then_some(t)
    }

    /// For a template whose shape `iss` has ([`Self::tenant_in`]): whether the token's `tid`
    /// is that tenant and the tenant is allowed.
    #[inline]
    pub(crate) fn check_tenant(
        &self,
        tenant: &str,
        tid: Option<&str>,
    ) -> Result<(), TenantRefusal> {
        if tid != Some(tenant) {
            return Err(TenantRefusal::TidMismatch);
        }
        match self {
            IssMatch::Tenant {
                tenants: Some(allowed),
                ..
            } if !allowed.iter().any(|a| a.eq_ignore_ascii_case(tenant)) => {
                Err(TenantRefusal::NotAllowed)
            }
            _ => Ok(()),
        }
    }

    /// Whether a token with this `iss` and `tid` is this issuer's.
    #[inline]
    pub fn accepts(&self, iss: Option<&str>, tid: Option<&str>) -> bool {
        let Some(iss) = iss else { return false };
        match self {
            IssMatch::Exact(e) => e == iss,
            IssMatch::Tenant { .. } => self
                .tenant_in(iss)
                .is_some_and(|t| self.check_tenant(t, tid).is_ok()),
        }
    }
}

/// The refusal of a token whose header carries a `nonce`: a Microsoft Graph access token (Graph
/// signs a hash of the nonce, not the header as sent, so the signature cannot verify anywhere
/// but at Graph). Said plainly instead of `bad_signature`, which would send the operator
/// hunting for a key problem.
pub(crate) fn nonce_refusal(claims: &Claims<'_>) -> Rejection {
    if claims.aud_is_one_of(GRAPH_AUDIENCES) {
        Rejection::new(
            Reason::UnsupportedToken,
            "a Microsoft Graph token (nonce in header): request a token for this gateway's audience",
        )
    } else {
        Rejection::new(
            Reason::UnsupportedToken,
            "token header has a nonce, as Microsoft Graph tokens do: only their own API can validate them; request a token for this gateway's audience",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const T1: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const T2: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

    fn matcher(extra: &str) -> IssMatch {
        let c = Config::from_toml(
            &format!(
                "[[issuer]]\nname = \"entra\"\n\
                 issuer = \"https://login.microsoftonline.com/{{tenantid}}/v2.0\"\n\
                 jwks_uri = \"https://login.microsoftonline.com/common/discovery/v2.0/keys\"\n\
                 audiences = [\"a\"]\n{extra}"
            ),
            "t",
        )
        .unwrap();
        IssMatch::from_config(&c.issuers[0])
    }

    #[test]
    fn template_needs_the_tid_of_iss() {
        let any = matcher("");
        let iss = format!("https://login.microsoftonline.com/{T1}/v2.0");
        assert_eq!(any.tenant_in(&iss), Some(T1));
        assert!(any.accepts(Some(&iss), Some(T1)));
        assert!(!any.accepts(Some(&iss), Some(T2)), "tid of another tenant");
        assert!(!any.accepts(Some(&iss), None), "no tid");
        assert_eq!(
            any.check_tenant(T1, Some(T2)),
            Err(TenantRefusal::TidMismatch)
        );
        for not_shaped in [
            "https://login.microsoftonline.com/common/v2.0".to_string(),
            format!("https://login.microsoftonline.com/{T1}/v2.0/"),
            format!("https://login.microsoftonline.com/{T1}"),
            format!("https://sts.windows.net/{T1}/"),
            format!("https://login.microsoftonline.com/{T1}/x/v2.0"),
        ] {
            assert_eq!(any.tenant_in(&not_shaped), None, "{not_shaped}");
            assert!(!any.accepts(Some(&not_shaped), Some(T1)));
        }
    }

    #[test]
    fn tenants_restrict() {
        let only = matcher(&format!("tenants = [\"{}\"]\n", T1.to_uppercase()));
        let iss = |t: &str| format!("https://login.microsoftonline.com/{t}/v2.0");
        assert!(only.accepts(Some(&iss(T1)), Some(T1)));
        assert_eq!(
            only.check_tenant(T2, Some(T2)),
            Err(TenantRefusal::NotAllowed)
        );
        assert!(!only.accepts(Some(&iss(T2)), Some(T2)));
        assert_eq!(
            TenantRefusal::NotAllowed.rejection().reason,
            Reason::UnknownIssuer
        );
    }

    #[test]
    fn exact_issuers() {
        let e = IssMatch::Exact("accounts.google.com".into());
        assert!(e.accepts(Some("accounts.google.com"), None));
        assert!(!e.accepts(Some("https://accounts.google.com"), None));
        assert!(!e.accepts(None, None));
        assert_eq!(e.tenant_in("accounts.google.com"), None);
    }
}
