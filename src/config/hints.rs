//! Per-IdP hints about an `[[issuer]]` that is valid but most likely not what the operator
//! meant: the issuer of the wrong Okta authorization server, an Entra ID audience of the other
//! token version, a Keycloak issuer without its realm, an Auth0 issuer without its trailing
//! slash. Each is a warning (check-config prints it, the agent logs it at start and on reload),
//! never an error: the hint may be wrong for an unusual but deliberate setup.

use super::{IssuerConfig, IssuerKind};

/// The hints for one issuer, each one sentence naming what to change.
pub fn issuer_hints(ic: &IssuerConfig) -> Vec<String> {
    let mut out = Vec::new();
    let iss = ic.issuer.as_str();
    if *ic.issuer.kind() != IssuerKind::Url {
        return out;
    }
    let Ok(u) = url::Url::parse(iss) else {
        return out;
    };
    let host = u.host_str().unwrap_or("").to_ascii_lowercase();
    let path = u.path();
    let introspected = ic.introspection.is_some();
    let okta = [
        ".okta.com",
        ".oktapreview.com",
        ".okta-emea.com",
        ".okta-gov.com",
    ]
    .iter()
    .any(|d| host.ends_with(d));
    if okta && !introspected && (path.is_empty() || path == "/") {
        out.push(format!(
            "issuer {iss:?} is Okta's org authorization server: its access tokens are for \
             Okta's own APIs and cannot be validated by a third party (Okta does not support \
             verifying them with its keys); use a custom authorization server (issuer \
             \"https://{host}/oauth2/default\", audiences = [\"api://default\"]) or \
             kind = \"introspection\""
        ));
    }
    if okta && path.starts_with("/oauth2/") && path.ends_with('/') {
        out.push(format!(
            "issuer {iss:?} ends with a slash, Okta's iss does not (\"{}\")",
            iss.trim_end_matches('/')
        ));
    }
    if host == "login.microsoftonline.com"
        && path.ends_with("/v2.0")
        && !ic.audiences.is_empty()
        && ic.audiences.iter().all(|a| a.starts_with("api://"))
    {
        out.push(format!(
            "issuer {iss:?} is Entra ID's v2.0 issuer, whose access tokens carry the \
             application (client) id GUID in aud, but audiences only lists App ID URIs \
             (api://...), the aud of v1.0 tokens: list the client id, or, if the app \
             registration issues v1.0 tokens (accessTokenAcceptedVersion null or 1), use \
             the v1.0 issuer \"https://sts.windows.net/{{tenant id}}/\""
        ));
    }
    if host == "sts.windows.net" && !path.ends_with('/') {
        out.push(format!(
            "issuer {iss:?}: Entra ID v1.0 tokens say \"{iss}/\" (with a trailing slash)"
        ));
    }
    let keycloak_urls = [
        ic.jwks_uri.as_ref().map(|u| u.as_str()),
        ic.introspection.as_ref().map(|i| i.url.as_str()),
    ];
    let keycloak = keycloak_urls
        .iter()
        .flatten()
        .any(|u| u.contains("/protocol/openid-connect/"))
        || path.trim_end_matches('/').ends_with("/auth");
    let realm = path
        .split('/')
        .skip_while(|s| *s != "realms")
        .nth(1)
        .filter(|r| !r.is_empty());
    if keycloak && realm.is_none() {
        out.push(format!(
            "issuer {iss:?} looks like a Keycloak server without its realm: Keycloak's iss is \
             \"https://{{host}}[/auth]/realms/{{realm}}\" (the realm's OpenID Endpoint \
             Configuration shows it)"
        ));
    }
    if realm.is_some() && path.ends_with('/') {
        out.push(format!(
            "issuer {iss:?} ends with a slash, Keycloak's iss does not (\"{}\")",
            iss.trim_end_matches('/')
        ));
    }
    if let Some(i) = &ic.introspection {
        let expected = if okta && (path.is_empty() || path == "/") {
            // The org authorization server's endpoints are under /oauth2/v1.
            Some(format!(
                "{}/oauth2/v1/introspect",
                iss.trim_end_matches('/')
            ))
        } else if okta {
            Some(format!("{}/v1/introspect", iss.trim_end_matches('/')))
        } else if realm.is_some() {
            Some(format!(
                "{}/protocol/openid-connect/token/introspect",
                iss.trim_end_matches('/')
            ))
        } else {
            None
        };
        if let Some(expected) = expected.filter(|e| e != i.url.as_str()) {
            out.push(format!(
                "introspection_url {:?} is not the endpoint of issuer {iss:?} ({expected:?}): \
                 an authorization server answers active: false for another server's tokens \
                 (Okta: the org server's /oauth2/v1/introspect does not know the tokens of \
                 /oauth2/default)",
                i.url.as_str()
            ));
        }
    }
    if host.ends_with(".auth0.com") && !iss.ends_with('/') {
        out.push(format!(
            "issuer {iss:?}: Auth0's iss ends with a slash (\"{iss}/\"); without it every \
             token is refused as unknown_issuer"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn hints(issuer_toml: &str) -> Vec<String> {
        let c = Config::from_toml(&format!("[[issuer]]\nname = \"i\"\n{issuer_toml}"), "t")
            .unwrap_or_else(|e| panic!("{e}"));
        issuer_hints(&c.issuers[0])
    }

    fn one(issuer_toml: &str, needle: &str) {
        let h = hints(issuer_toml);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h[0].contains(needle), "{h:?}");
    }

    #[test]
    fn okta_org_authorization_server() {
        one(
            "issuer = \"https://example.okta.com\"\naudiences = [\"api://default\"]\n",
            "Okta's org authorization server",
        );
        one(
            "issuer = \"https://example.okta.com/oauth2/default/\"\naudiences = [\"api://default\"]\n",
            "Okta's iss does not",
        );
        assert!(hints(
            "issuer = \"https://example.okta.com/oauth2/default\"\naudiences = [\"api://default\"]\n"
        )
        .is_empty());
    }

    #[test]
    fn entra_versions() {
        let v2 = "issuer = \"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0\"\n";
        one(
            &format!("{v2}audiences = [\"api://databricks-gateway\"]\n"),
            "v2.0 issuer",
        );
        assert!(hints(&format!(
            "{v2}audiences = [\"6e74172b-be56-4843-9ff4-e66a39bb12e3\", \"api://gw\"]\n"
        ))
        .is_empty());
        one(
            "issuer = \"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47\"\naudiences = [\"api://gw\"]\n",
            "with a trailing slash",
        );
        assert!(hints(
            "issuer = \"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/\"\naudiences = [\"api://gw\"]\n"
        )
        .is_empty());
    }

    #[test]
    fn keycloak_realm_and_slash() {
        one(
            "issuer = \"https://kc.example.com\"\naudiences = [\"gw\"]\n\
             jwks_uri = \"https://kc.example.com/realms/corp/protocol/openid-connect/certs\"\n",
            "without its realm",
        );
        one(
            "issuer = \"https://kc.example.com/auth\"\naudiences = [\"gw\"]\n",
            "without its realm",
        );
        one(
            "issuer = \"https://kc.example.com/realms/corp/\"\naudiences = [\"gw\"]\n",
            "Keycloak's iss does not",
        );
        assert!(
            hints("issuer = \"https://kc.example.com/realms/corp\"\naudiences = [\"gw\"]\n")
                .is_empty()
        );
    }

    #[test]
    fn introspection_endpoint_of_another_server() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("s"), "x").unwrap();
        let intro = |iss: &str, url: &str| {
            let text = format!(
                "[[issuer]]\nname = \"i\"\nkind = \"introspection\"\nissuer = \"{iss}\"\n\
                 introspection_url = \"{url}\"\nclient_id = \"c\"\nclient_secret_file = \"s\"\n\
                 audiences = [\"a\"]\n"
            );
            let c = Config::from_toml_in(&text, "t", d.path()).unwrap_or_else(|e| panic!("{e}"));
            issuer_hints(&c.issuers[0])
        };
        let okta = "https://example.okta.com/oauth2/default";
        let h = intro(okta, "https://example.okta.com/oauth2/v1/introspect");
        assert!(
            h.len() == 1 && h[0].contains("/oauth2/default/v1/introspect"),
            "{h:?}"
        );
        assert!(intro(okta, &format!("{okta}/v1/introspect")).is_empty());
        let kc = "https://kc.example.com/realms/corp";
        let h = intro(
            kc,
            "https://kc.example.com/realms/master/protocol/openid-connect/token/introspect",
        );
        assert!(
            h.len() == 1 && h[0].contains("realms/corp/protocol"),
            "{h:?}"
        );
        assert!(intro(
            kc,
            &format!("{kc}/protocol/openid-connect/token/introspect")
        )
        .is_empty());
        // The org server itself, introspected: no org-server hint, its own endpoint.
        assert!(intro(
            "https://example.okta.com",
            "https://example.okta.com/oauth2/v1/introspect"
        )
        .is_empty());
        let h = intro(
            "https://example.okta.com",
            "https://example.okta.com/oauth2/default/v1/introspect",
        );
        assert!(
            h.len() == 1 && h[0].contains("\"https://example.okta.com/oauth2/v1/introspect\""),
            "{h:?}"
        );
    }

    #[test]
    fn auth0_trailing_slash() {
        one(
            "issuer = \"https://example.us.auth0.com\"\naudiences = [\"https://api.example.com\"]\n",
            "Auth0's iss ends with a slash",
        );
        assert!(hints("issuer = \"https://example.us.auth0.com/\"\naudiences = [\"https://api.example.com\"]\n").is_empty());
        assert!(hints("issuer = \"accounts.google.com\"\naudiences = [\"x\"]\njwks_uri = \"https://www.googleapis.com/oauth2/v3/certs\"\n").is_empty());
    }
}
