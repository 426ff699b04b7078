//! `token_exchange` (RFC 8693, Databricks OAuth token federation): the caller's validated JWT
//! is the `subject_token`; `client_id` goes in the form only when configured (workload
//! identity federation with a service-principal policy), never a secret. Tokens are cached
//! **per caller token**, never shared.
//!
//! The cache key is the caller token's [`TokenKey`] (SHA-256 of the whole token), not (issuer,
//! sub, exp): Databricks maps the subject token to a user through the federation policy's
//! `subject_claim`, which need not be `sub`, and may look at `aud` and other claims. Two
//! different tokens with the same (iss, sub, exp) could therefore map to different Databricks
//! identities, and a key built from them could hand caller B the token exchanged for caller A.
//! The same token bytes always map to the same identity, so a hash of the token is the only
//! key that is safe whatever the policy. The cost is one exchange per distinct caller token (a
//! caller whose IdP rotates tokens every 5 minutes is exchanged every 5 minutes), bounded by
//! `cache_size`. The caller's token itself is not stored, only its key. The authenticator
//! computed that key already, and the engine hands it over, so it is not hashed twice.
//!
//! `on_behalf_of` (Microsoft Entra ID's on-behalf-of flow, "Microsoft identity platform and
//! OAuth 2.0 On-Behalf-Of flow") is the same per-caller machinery with another request:
//! `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, `client_id`, `assertion=<the
//! caller's token>`, `scope`, `requested_token_use=on_behalf_of`, and the client authenticated
//! like `client_credentials` (HTTP Basic secret, or a client assertion per attempt).
//!
//! Without a caller token there is nothing to exchange: a public rule cannot name a
//! `token_exchange` upstream (the policy compiler refuses it), and should a request reach one
//! anyway it is refused without a token request ([`UpstreamError::NoCallerToken`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::cache::{spawn, Holdoff, TokenEntry, EXPIRY_MARGIN, REFUSAL_TTL};
use super::client_credentials::Auth;
use super::data_plane::GRANT_JWT_BEARER;
use super::failure::{self, Failure, Trigger};
use super::oauth::{Body, Endpoint, Token};
use super::shared::{Kind, SharedCredentials};
use super::{Caller, UpstreamError};
use crate::token_key::{token_key, TokenKey};
use reqwest::header::HeaderValue;

/// RFC 8693 grant type.
pub(crate) const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of the caller's IdP JWT.
pub(crate) const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The request that exchanges a caller's token.
enum Grant {
    /// RFC 8693 at a Databricks token endpoint; `client_id` for workload identity federation.
    Federation { client_id: Option<String> },
    /// Entra ID on-behalf-of, the client authenticated by `auth`.
    OnBehalfOf { client_id: String, auth: Auth },
}

/// One token per caller token.
pub(crate) struct TokenExchange {
    ep: Endpoint,
    scope: String,
    grant: Grant,
    refresh_ahead: Duration,
    holdoff: Holdoff,
    /// The fleet's store (`[shared]`), behind the local cache.
    shared: Option<Arc<SharedCredentials>>,
    cache: moka::future::Cache<TokenKey, Arc<Slot>>,
}

/// A cache entry: a token, or a recent refusal of this caller's token.
#[derive(Debug)]
enum Slot {
    Token(TokenEntry),
    Refused { err: UpstreamError, until: Instant },
}

/// Lets moka drop an entry when it can no longer be served.
struct SlotExpiry;

impl SlotExpiry {
    fn left(slot: &Slot, from: Instant) -> Option<Duration> {
        let end = match slot {
            Slot::Token(e) => e.usable_until,
            Slot::Refused { until, .. } => *until,
        };
        Some(end.saturating_duration_since(from))
    }
}

impl moka::Expiry<TokenKey, Arc<Slot>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        v: &Arc<Slot>,
        created_at: Instant,
    ) -> Option<Duration> {
        SlotExpiry::left(v, created_at)
    }

    fn expire_after_update(
        &self,
        _: &TokenKey,
        v: &Arc<Slot>,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        SlotExpiry::left(v, updated_at)
    }
}

impl TokenExchange {
    pub(crate) fn new(
        ep: Endpoint,
        scope: String,
        client_id: Option<String>,
        refresh_ahead: Duration,
        cache_size: u64,
    ) -> TokenExchange {
        TokenExchange::with_grant(
            ep,
            scope,
            Grant::Federation { client_id },
            refresh_ahead,
            cache_size,
        )
    }

    /// Entra ID on-behalf-of.
    pub(crate) fn on_behalf_of(
        ep: Endpoint,
        scope: String,
        client_id: &str,
        auth: Auth,
        refresh_ahead: Duration,
        cache_size: u64,
    ) -> TokenExchange {
        let grant = Grant::OnBehalfOf {
            client_id: client_id.to_string(),
            auth,
        };
        TokenExchange::with_grant(ep, scope, grant, refresh_ahead, cache_size)
    }

    fn with_grant(
        ep: Endpoint,
        scope: String,
        grant: Grant,
        refresh_ahead: Duration,
        cache_size: u64,
    ) -> TokenExchange {
        TokenExchange {
            ep,
            scope,
            grant,
            refresh_ahead,
            holdoff: Holdoff::default(),
            shared: None,
            cache: moka::future::Cache::builder()
                .max_capacity(cache_size)
                .expire_after(SlotExpiry)
                .build(),
        }
    }

    /// Share results through the fleet's store.
    pub(crate) fn with_shared(mut self, shared: Option<Arc<SharedCredentials>>) -> Self {
        self.shared = shared;
        self
    }

    /// Where this caller's result is shared, when it is.
    fn shared_key(&self, key: &TokenKey) -> Option<(&Arc<SharedCredentials>, String)> {
        let s = self.shared.as_ref()?;
        Some((s, s.key(Kind::Exchange, &self.ep.upstream, key, "")))
    }

    /// Cached entries (tokens and remembered refusals), after moka's pending maintenance.
    pub(crate) async fn cached_entries(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }

    /// What a cached slot answers at `now`: its token while fresh (starting a background
    /// refresh once one is due), its refusal while in force, or `None` once stale.
    #[inline]
    fn answer(
        self: &Arc<Self>,
        slot: &Slot,
        now: Instant,
        http: &reqwest::Client,
        key: &TokenKey,
        token: &str,
        caller: Caller<'_>,
    ) -> Option<Result<Arc<str>, UpstreamError>> {
        match slot {
            Slot::Token(e) if e.fresh(now) => {
                if e.claim_refresh(now) {
                    let caller_exp = caller.identity.map(|i| i.expires_at);
                    self.spawn_refresh(http, *key, token, caller_exp);
                }
                Some(Ok(Arc::clone(&e.header)))
            }
            Slot::Refused { err, until } if now < *until => Some(Err(err.clone())),
            _ => None,
        }
    }

    /// The caller's exchanged token. A cached answer is served here, unboxed, with the
    /// decision's clock reading `now`: a plain cache lookup, because `try_get_with` builds the
    /// exchange future (and moka its own single-flight state) even on a hit. Only a miss or a
    /// stale entry takes the boxed [`TokenExchange::fetch`].
    pub(crate) async fn credential(
        self: &Arc<Self>,
        http: &reqwest::Client,
        caller: Caller<'_>,
        now: Instant,
    ) -> Result<Arc<str>, UpstreamError> {
        // Never an exchange of an empty subject token, whatever the caller passed.
        let Some(token) = caller.token.filter(|t| !t.is_empty()) else {
            return Err(self.no_caller_token());
        };
        let key = match caller.key {
            Some(k) => *k,
            None => token_key(token),
        };
        if let Some(slot) = self.cache.get(&key).await {
            if let Some(answer) = self.answer(&slot, now, http, &key, token, caller) {
                return answer;
            }
            self.cache.invalidate(&key).await;
        }
        let deadline = self.ep.deadline_from(now);
        Box::pin(self.fetch(http, token, caller, key, deadline)).await
    }

    /// Reached without a caller token: a configuration mistake the policy compiler should have
    /// refused (a public rule naming this upstream). Logged as such, and refused.
    #[cold]
    #[inline(never)]
    fn no_caller_token(&self) -> UpstreamError {
        failure::log_config(
            &self.ep.upstream,
            Some(&self.ep.shown_url),
            "token_exchange needs the caller's token and the request has none \
             (a public rule cannot use a token_exchange upstream)",
        );
        UpstreamError::NoCallerToken(Arc::clone(&self.ep.upstream))
    }

    /// Exchange the caller's token (single flight per caller through the cache).
    async fn fetch(
        self: &Arc<Self>,
        http: &reqwest::Client,
        token: &str,
        caller: Caller<'_>,
        key: TokenKey,
        deadline: Instant,
    ) -> Result<Arc<str>, UpstreamError> {
        let caller_exp = caller.identity.map(|i| i.expires_at);
        // Two rounds: moka's clock and ours can disagree by a hair, so an entry moka still
        // returns may be past `usable_until`; it is dropped and fetched once more.
        for _ in 0..2 {
            let slot = self
                .cache
                .try_get_with(key, self.exchange(http, token, &key, caller_exp, deadline))
                .await
                .map_err(|e| (*e).clone())?;
            if let Some(answer) = self.answer(&slot, Instant::now(), http, &key, token, caller) {
                return answer;
            }
            self.cache.invalidate(&key).await;
        }
        let f = Failure::invalid(None, "token expired as soon as it was issued");
        failure::log_failure(
            &self.ep.upstream,
            &self.ep.shown_url,
            &f,
            2,
            Trigger::Caller,
        );
        Err(UpstreamError::Failed {
            upstream: Arc::clone(&self.ep.upstream),
            failure: Arc::new(f),
            per_caller: true,
        })
    }

    /// The form (without a client assertion, which is signed per attempt).
    fn form(&self, caller_token: &str) -> Bytes {
        let mut s =
            url::form_urlencoded::Serializer::new(String::with_capacity(caller_token.len() + 256));
        match &self.grant {
            Grant::Federation { client_id } => {
                s.append_pair("grant_type", GRANT_TOKEN_EXCHANGE)
                    .append_pair("subject_token", caller_token)
                    .append_pair("subject_token_type", TOKEN_TYPE_JWT)
                    .append_pair("scope", &self.scope);
                if let Some(id) = client_id {
                    s.append_pair("client_id", id);
                }
            }
            Grant::OnBehalfOf { client_id, auth } => {
                s.append_pair("grant_type", GRANT_JWT_BEARER)
                    .append_pair("assertion", caller_token)
                    .append_pair("scope", &self.scope)
                    .append_pair("requested_token_use", "on_behalf_of");
                match auth {
                    Auth::Assertion(_) => auth.append_to(&mut s, client_id),
                    _ => {
                        s.append_pair("client_id", client_id);
                    }
                }
            }
        }
        Bytes::from(s.finish())
    }

    /// The body and `Authorization` of a request with the form `form`.
    fn parts(&self, form: Bytes) -> (Body<'_>, Option<&HeaderValue>) {
        match &self.grant {
            Grant::Federation { .. } => (Body::Form(form), None),
            Grant::OnBehalfOf { auth, .. } => auth.request_parts(form),
        }
    }

    /// Refreshing ahead only helps if the caller's token outlives the exchanged one (the
    /// exchanged token's lifetime derives from the subject token's); without an identity we
    /// cannot tell, so refresh.
    fn worth_refreshing(tok: &Token, caller_exp: Option<u64>) -> bool {
        let Some(exp) = caller_exp else { return true };
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        exp > now_unix
            .saturating_add(tok.lifetime.as_secs())
            .saturating_add(EXPIRY_MARGIN.as_secs())
    }

    async fn exchange(
        &self,
        http: &reqwest::Client,
        caller_token: &str,
        key: &TokenKey,
        caller_exp: Option<u64>,
        deadline: Instant,
    ) -> Result<Arc<Slot>, UpstreamError> {
        let shared = self.shared_key(key);
        if let Some((s, k)) = &shared {
            if let Some(tok) = s.get(k).await {
                let refresh = Self::worth_refreshing(&tok, caller_exp);
                return Ok(Arc::new(Slot::Token(TokenEntry::new(
                    &tok,
                    self.refresh_ahead,
                    refresh,
                ))));
            }
        }
        self.holdoff.error(&self.ep.upstream, Instant::now())?;
        let (form, auth) = self.parts(self.form(caller_token));
        match self
            .ep
            .request(http, form, auth, Trigger::Caller, deadline)
            .await
        {
            Ok(tok) => {
                if let Some((s, k)) = shared {
                    s.put(k, &tok);
                }
                let refresh = Self::worth_refreshing(&tok, caller_exp);
                Ok(Arc::new(Slot::Token(TokenEntry::new(
                    &tok,
                    self.refresh_ahead,
                    refresh,
                ))))
            }
            Err(f) => {
                if f.is_endpoint_failure() {
                    self.holdoff.after(&f);
                }
                let refused = !f.is_endpoint_failure();
                let err = UpstreamError::Failed {
                    upstream: Arc::clone(&self.ep.upstream),
                    failure: Arc::new(f),
                    per_caller: true,
                };
                if refused {
                    Ok(Arc::new(Slot::Refused {
                        err,
                        until: Instant::now() + REFUSAL_TTL,
                    }))
                } else {
                    Err(err)
                }
            }
        }
    }

    fn spawn_refresh(
        self: &Arc<Self>,
        http: &reqwest::Client,
        key: TokenKey,
        caller_token: &str,
        caller_exp: Option<u64>,
    ) {
        let this = Arc::clone(self);
        let http = http.clone();
        let form = self.form(caller_token);
        spawn(async move {
            if this.holdoff.remaining(Instant::now()).is_some() {
                return;
            }
            let deadline = this.ep.deadline_from(Instant::now());
            let (form, auth) = this.parts(form);
            match this
                .ep
                .request(&http, form, auth, Trigger::Refresh, deadline)
                .await
            {
                Ok(tok) => {
                    if let Some((s, k)) = this.shared_key(&key) {
                        s.put(k, &tok);
                    }
                    let refresh = Self::worth_refreshing(&tok, caller_exp);
                    let e = TokenEntry::new(&tok, this.refresh_ahead, refresh);
                    this.cache.insert(key, Arc::new(Slot::Token(e))).await;
                }
                // A refusal now (e.g. the subject token is about to expire) must not evict
                // the still valid token; an endpoint failure holds off the others.
                Err(f) if f.is_endpoint_failure() => this.holdoff.after(&f),
                Err(_) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::cache::tests::token;
    use super::*;

    #[test]
    fn worth_refreshing_only_if_the_caller_outlives_the_token() {
        let t = token(Duration::from_secs(3600));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(TokenExchange::worth_refreshing(&t, None));
        assert!(TokenExchange::worth_refreshing(&t, Some(now + 7200)));
        assert!(!TokenExchange::worth_refreshing(&t, Some(now + 3600)));
    }
}
