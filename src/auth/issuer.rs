//! One configured issuer: its claim rules, algorithms and key store, and the signature step
//! of validation (key selection, then every candidate key of the token's kid).

use std::sync::Arc;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Algorithm;
use tokio::task::AbortHandle;

use super::entra::IssMatch;
use super::jose::{self, ClaimRules};
use super::jwks::{Candidates, Selection};
use super::keystore::KeyStore;
use super::{DEFAULT_EMAIL_CLAIM, DEFAULT_GROUPS_CLAIM};
use crate::claim_path::ClaimPath;
use crate::config::IssuerConfig;
use crate::decision::{Identity, Reason, Rejection};

/// One configured issuer: its rules and its (possibly shared) key store.
pub(super) struct Issuer {
    pub(super) cfg: IssuerConfig,
    pub(super) rules: ClaimRules,
    algorithms: Vec<Algorithm>,
    pub(super) store: Arc<KeyStore>,
    pub(super) refresher: Option<AbortHandle>,
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(h) = &self.refresher {
            h.abort();
        }
    }
}

impl Issuer {
    /// `seed`: a previous store of the same key source whose keys this one starts from
    /// ([`KeyStore::seed_from`]).
    pub(super) fn new(
        cfg: &IssuerConfig,
        http: reqwest::Client,
        seed: Option<&KeyStore>,
    ) -> Issuer {
        let algorithms = cfg.algorithms.iter().map(|&a| a.into()).collect();
        // `ca_file` was read and parsed when the configuration was checked; should it fail
        // now (changed underneath), the issuer keeps only the default trust: its keys then
        // fail to load and its tokens are refused, never accepted.
        let http = match &cfg.ca_file {
            Some(f) => crate::outbound::client_trusting(f.path()).unwrap_or_else(|e| {
                tracing::error!(issuer = %cfg.name, "ca_file unusable, default trust only: {e}");
                http
            }),
            None => http,
        };
        let store = Arc::new(KeyStore::new(cfg, http));
        if cfg.issuer.template_parts().is_some() && cfg.tenants.is_none() {
            tracing::warn!(
                issuer = %cfg.name,
                "issuer {:?} accepts tokens of any Entra ID tenant (no tenants list): any \
                 organization's users can present tokens for your audience if your app \
                 registration is multi-tenant; list the tenants you trust in tenants",
                cfg.issuer.as_str()
            );
        }
        if let Some(seed) = seed {
            store.seed_from(seed);
        }
        let refresher = store.spawn_refresher();
        Issuer {
            rules: claim_rules(cfg),
            cfg: cfg.clone(),
            algorithms,
            store,
            refresher,
        }
    }

    pub(super) async fn validate(
        &self,
        raw: &str,
        parsed: &jose::Parsed,
        claims: &jose::Claims<'_>,
        now: u64,
    ) -> Result<Identity, Rejection> {
        let h = &parsed.header;
        h.check_issuer(&self.algorithms, &self.cfg.allowed_typ)?;
        let keys = self.select_key(h.kid.as_deref(), h.alg).await?;
        // Signature over the exact bytes `header.payload` of the token we parsed (not a
        // re-serialisation), with the algorithm we allow-listed, never one jsonwebtoken picks.
        let (signing_input, signature) = parsed.signing_input_and_signature(raw);
        verify_on_any_core(keys, h.alg, signing_input, signature).await?;
        jose::check_claims(&self.rules, claims, now)
    }

    async fn select_key(&self, kid: Option<&str>, alg: Algorithm) -> Result<Candidates, Rejection> {
        let mut refetched = false;
        loop {
            let generation = self.store.generation();
            match self.store.keys().select(kid, alg) {
                Selection::Found(k) => return Ok(k),
                Selection::WrongAlgorithm => {
                    return Err(Rejection::new(
                        Reason::AlgNotAllowed,
                        "token alg does not match its signing key",
                    ))
                }
                Selection::Ambiguous => {
                    return Err(Rejection::new(
                        Reason::UnknownKey,
                        "token has no kid and several keys could match",
                    ))
                }
                Selection::NotFound if !refetched => {
                    refetched = true;
                    if self.store.refetch_for_miss(generation).await {
                        continue;
                    }
                }
                Selection::NotFound => {}
            }
            return Err(if self.store.is_loaded() {
                Rejection::new(Reason::UnknownKey, "no signing key matches the token kid")
            } else {
                Rejection::new(
                    Reason::UnknownKey,
                    "signing keys of this issuer are not loaded yet",
                )
            });
        }
    }
}

/// The claim rules of an issuer (JWT or introspection: the claims are checked alike).
pub(super) fn claim_rules(cfg: &IssuerConfig) -> ClaimRules {
    let default_path = |p: &str| ClaimPath::parse(p).expect("the default claim names parse");
    ClaimRules {
        name: Arc::from(cfg.name.as_str()),
        iss: IssMatch::from_config(cfg),
        audiences: cfg.audiences.iter().cloned().collect(),
        leeway: cfg.leeway.0.as_secs(),
        max_lifetime: cfg.max_token_lifetime.0.as_secs(),
        email_claim: cfg
            .email_claim
            .clone()
            .unwrap_or_else(|| default_path(DEFAULT_EMAIL_CLAIM)),
        groups_claim: cfg
            .groups_claim
            .clone()
            .unwrap_or_else(|| default_path(DEFAULT_GROUPS_CLAIM)),
        user_claim: cfg.user_claim.clone(),
    }
}

/// Reason for a `jsonwebtoken::crypto::verify` error (the signature could not even be checked).
pub(super) fn map_jwt_error(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::InvalidSignature => Rejection::new(Reason::BadSignature, "invalid signature"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => Rejection::new(
            Reason::AlgNotAllowed,
            "signature algorithm not allowed for this key",
        ),
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => Rejection::new(
            Reason::BadSignature,
            "signature could not be verified with the issuer key",
        ),
        // Base64 (a signature that is not base64url) and anything else.
        _ => Rejection::new(Reason::MalformedToken, "token could not be decoded"),
    }
}

/// The signature check, the only costly step of a cold validation (tens of microseconds: see
/// docs/performance.md), as a task of its own on the multi-threaded runtime, so that a burst of
/// new tokens on one SPOP connection spreads over every core (idle workers steal the tasks)
/// instead of running one after the other in that connection's task, and the connection keeps
/// answering cached requests meanwhile. The token's signed bytes are copied (about 1 KiB, well
/// under a microsecond against the check's tens). Outside a multi-threaded runtime (tests,
/// `idgate explain`) the check runs inline.
async fn verify_on_any_core(
    keys: Candidates,
    alg: Algorithm,
    signing_input: &str,
    signature: &str,
) -> Result<(), Rejection> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if !multi_thread {
        return verify_signature(&keys, alg, signing_input.as_bytes(), signature);
    }
    let split = signing_input.len();
    let signed: Box<str> = [signing_input, signature].concat().into();
    let task = tokio::spawn(async move {
        let (input, signature) = signed.split_at(split);
        verify_signature(&keys, alg, input.as_bytes(), signature)
    });
    task.await.unwrap_or_else(|e| {
        tracing::error!("signature check failed to run: {e}");
        Err(Rejection::new(
            Reason::InternalError,
            "signature check failed to run",
        ))
    })
}

/// Every key of the token's kid that accepts `alg` (a rotation overlap can publish two under
/// one kid; at most `jwks::MAX_KEYS_PER_KID`), in document order. `accepting` is the line that
/// keeps an RSA key from ever verifying an HS*/ES* token (RFC 8725 §3.1): `select_key` found at
/// least one such key.
fn verify_signature(
    keys: &Candidates,
    alg: Algorithm,
    signing_input: &[u8],
    signature: &str,
) -> Result<(), Rejection> {
    let mut unusable = None;
    for key in keys.accepting(alg) {
        match jsonwebtoken::crypto::verify(signature, signing_input, &key.key, alg) {
            Ok(true) => return Ok(()),
            // A plain mismatch decides the answer, whatever the other keys say.
            Ok(false) => unusable = Some(Rejection::new(Reason::BadSignature, "invalid signature")),
            Err(e) => {
                let r = map_jwt_error(e.kind());
                // The signature itself is unreadable: no other key will do better.
                if r.reason == Reason::MalformedToken {
                    return Err(r);
                }
                if unusable.is_none() {
                    unusable = Some(r);
                }
            }
        }
    }
    Err(unusable.unwrap_or(Rejection::new(
        Reason::AlgNotAllowed,
        "token alg does not match its signing key",
    )))
}
