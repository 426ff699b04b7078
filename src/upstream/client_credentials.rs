//! `client_credentials` (OAuth M2M): `POST {token_url}` with
//! `grant_type=client_credentials&scope=…` and HTTP Basic client authentication
//! (`client_id:client_secret`, each form-urlencoded first, RFC 6749 §2.3.1; Entra ID documents
//! it as supported too), or a signed client assertion ([`super::assertion`]). One token per
//! upstream, shared by every caller: the upstream sees the service principal.
//!
//! `azure_managed_identity` is the same machinery with a different request: `GET` the Azure
//! Instance Metadata Service with `Metadata: true` and no client authentication
//! ([`Auth::None`], an [`Endpoint`] built by [`Endpoint::imds`]).
//!
//! Latency: a cached token is one `ArcSwap` load, the freshness check against the decision's
//! clock reading and an `Arc` clone (no lock, no hashing). It is refreshed in the background
//! `refresh_ahead` before expiry, so callers wait on the token endpoint only for the very
//! first request (or after an outage), one request at a time (single flight).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::HeaderValue;
use zeroize::Zeroizing;

use super::assertion::{ClientAssertion, ASSERTION_TYPE};
use super::cache::{spawn, Holdoff, TokenEntry, REFUSAL_TTL};
use super::failure::Trigger;
use super::oauth::{Body, Endpoint};
use super::secret::Secret;
use super::{Blame, UpstreamError};

/// How the client authenticates to the token endpoint.
pub(crate) enum Auth {
    /// `Authorization: Basic …` ([`basic_auth`]).
    Basic(HeaderValue),
    /// A fresh `client_assertion` in the form for every request.
    Assertion(Box<ClientAssertion>),
    /// None (the Instance Metadata Service).
    None,
}

impl Auth {
    /// A client secret, sent as HTTP Basic; the error is for `client_secret_file`.
    pub(crate) fn basic(client_id: &str, secret: &Secret) -> Result<Auth, String> {
        basic_auth(client_id, secret).map(Auth::Basic)
    }

    /// A client assertion signed per request.
    pub(crate) fn assertion(a: ClientAssertion) -> Auth {
        Auth::Assertion(Box::new(a))
    }

    /// What a form needs for this authentication (the assertion itself is added per attempt).
    pub(crate) fn append_to(
        &self,
        form: &mut url::form_urlencoded::Serializer<'_, String>,
        client_id: &str,
    ) {
        if let Auth::Assertion(_) = self {
            form.append_pair("client_id", client_id)
                .append_pair("client_assertion_type", ASSERTION_TYPE);
        }
    }

    /// The body and `Authorization` of one request with the form `base`.
    pub(crate) fn request_parts(&self, base: Bytes) -> (Body<'_>, Option<&HeaderValue>) {
        match self {
            Auth::Basic(h) => (Body::Form(base), Some(h)),
            Auth::None => (Body::Form(base), None),
            Auth::Assertion(assertion) => (Body::Signed { base, assertion }, None),
        }
    }
}

/// One token for the whole upstream.
pub(crate) struct ClientCredentials {
    ep: Endpoint,
    auth: Auth,
    /// The form without the client assertion (empty for a GET).
    form: Bytes,
    refresh_ahead: Duration,
    current: ArcSwapOption<TokenEntry>,
    holdoff: Holdoff,
    /// Single flight: the holder of this lock is the only token request in flight. The value
    /// is the last failure and when it happened: callers queued behind a failed request share
    /// its error instead of each trying again (which would multiply the wait by the queue
    /// length).
    flight: tokio::sync::Mutex<Option<(Instant, UpstreamError)>>,
}

impl ClientCredentials {
    /// `client_credentials` authenticated by `auth` (HTTP Basic or a client assertion).
    pub(crate) fn with_auth(
        ep: Endpoint,
        client_id: &str,
        auth: Auth,
        scope: &str,
        refresh_ahead: Duration,
    ) -> ClientCredentials {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials")
            .append_pair("scope", scope);
        auth.append_to(&mut form, client_id);
        ClientCredentials::new(ep, auth, Bytes::from(form.finish()), refresh_ahead)
    }

    /// A token without client authentication (`azure_managed_identity`: the request is all in
    /// `ep`'s URL).
    pub(crate) fn unauthenticated(ep: Endpoint, refresh_ahead: Duration) -> ClientCredentials {
        ClientCredentials::new(ep, Auth::None, Bytes::new(), refresh_ahead)
    }

    fn new(ep: Endpoint, auth: Auth, form: Bytes, refresh_ahead: Duration) -> ClientCredentials {
        ClientCredentials {
            ep,
            auth,
            form,
            refresh_ahead,
            current: ArcSwapOption::empty(),
            holdoff: Holdoff::default(),
            flight: tokio::sync::Mutex::new(None),
        }
    }

    /// The body and `Authorization` of a token request (with a fresh assertion per attempt).
    fn request_parts(&self) -> (Body<'_>, Option<&HeaderValue>) {
        self.auth.request_parts(self.form.clone())
    }

    /// See [`Endpoint::deadline_from`].
    pub(crate) fn deadline_from(&self, start: Instant) -> Instant {
        self.ep.deadline_from(start)
    }

    /// Whether a token is cached (fresh or not).
    pub(crate) fn has_token(&self) -> bool {
        self.current.load().is_some()
    }

    /// The fast path: the current token if it may still be served (starting a background
    /// refresh when one is due). Synchronous, so a cached credential costs no future.
    #[inline]
    pub(crate) fn cached(
        self: &Arc<Self>,
        http: &reqwest::Client,
        now: Instant,
    ) -> Option<Arc<str>> {
        let guard = self.current.load();
        let e = guard.as_ref()?;
        if !e.fresh(now) {
            return None;
        }
        if e.claim_refresh(now) {
            self.spawn_refresh(http, Arc::clone(e));
        }
        Some(Arc::clone(&e.header))
    }

    /// The slow path: no fresh token. One request at a time; callers queued behind it take its
    /// token, or its error.
    /// A permanent refusal (a wrong secret) is answered again, without asking, for
    /// [`REFUSAL_TTL`]: every caller would get the same one.
    pub(crate) async fn fetch(
        &self,
        http: &reqwest::Client,
        deadline: Instant,
    ) -> Result<Arc<str>, UpstreamError> {
        let arrived = Instant::now();
        let mut last = self.flight.lock().await;
        let now = Instant::now();
        if let Some(e) = &*self.current.load() {
            if e.fresh(now) {
                return Ok(Arc::clone(&e.header));
            }
        }
        if let Some((at, err)) = &*last {
            let refusal = err.blame() != Blame::Transient;
            if *at >= arrived || (refusal && now < *at + REFUSAL_TTL) {
                return Err(err.clone());
            }
        }
        self.holdoff.error(&self.ep.upstream, now)?;
        let (form, auth) = self.request_parts();
        match self
            .ep
            .request(http, form, auth, Trigger::Caller, deadline)
            .await
        {
            Ok(tok) => {
                let e = Arc::new(TokenEntry::new(&tok, self.refresh_ahead, true));
                let header = Arc::clone(&e.header);
                self.current.store(Some(e));
                *last = None;
                Ok(header)
            }
            Err(f) => {
                // Every failure holds off: a bad secret (4xx) is the same for every caller.
                self.holdoff.after(&f);
                let err = UpstreamError::Failed {
                    upstream: Arc::clone(&self.ep.upstream),
                    failure: Arc::new(f),
                    per_caller: false,
                };
                *last = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    fn spawn_refresh(self: &Arc<Self>, http: &reqwest::Client, stale: Arc<TokenEntry>) {
        let this = Arc::clone(self);
        let http = http.clone();
        spawn(async move {
            let _flight = this.flight.lock().await;
            let replaced = match &*this.current.load() {
                Some(cur) => !Arc::ptr_eq(cur, &stale),
                None => true,
            };
            if replaced || this.holdoff.remaining(Instant::now()).is_some() {
                return;
            }
            let deadline = this.ep.deadline_from(Instant::now());
            let (form, auth) = this.request_parts();
            match this
                .ep
                .request(&http, form, auth, Trigger::Refresh, deadline)
                .await
            {
                Ok(tok) => {
                    let e = TokenEntry::new(&tok, this.refresh_ahead, true);
                    this.current.store(Some(Arc::new(e)));
                }
                // Logged by the endpoint; the current token is served until it expires and
                // `refresh_due` paces the next try.
                Err(f) => this.holdoff.after(&f),
            }
        });
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1, as the
/// Databricks SDK sends it). Built once per upstream; marked sensitive so HTTP tooling never
/// prints it.
pub(crate) fn basic_auth(client_id: &str, secret: &Secret) -> Result<HeaderValue, String> {
    let enc = |s: &str| -> Zeroizing<String> {
        Zeroizing::new(url::form_urlencoded::byte_serialize(s.as_bytes()).collect())
    };
    let mut pair = Zeroizing::new(String::with_capacity(client_id.len() + 64));
    pair.push_str(&enc(client_id));
    pair.push(':');
    pair.push_str(&enc(secret.expose()));
    let mut value = Zeroizing::new(String::from("Basic "));
    base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut value);
    let mut h =
        HeaderValue::from_str(&value).map_err(|_| "cannot form a Basic header".to_string())?;
    h.set_sensitive(true);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_form_encoded_and_sensitive() {
        let h = basic_auth("id:1", &Secret::new("p&ss+/".into())).unwrap();
        assert!(h.is_sensitive());
        let b64 = h.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(raw, b"id%3A1:p%26ss%2B%2F");
    }
}
