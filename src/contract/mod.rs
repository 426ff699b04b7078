//! What HAProxy sees: the `authorize` SPOE message (contract §2) and the variables of the ACK
//! (contract §3).
//!
//! One NOTIFY walks down the layers once:
//!
//! ```text
//! spop (decode NOTIFY) -> request_from_messages -> Authorizer (the engine decides)
//!                      -> render (variables) -> spop (encode ACK)
//! ```
//!
//! The shell calls [`answer`] once per NOTIFY, and sends the [`Ack`] it returns; it never
//! names a variable. [`answer`] owns the failure modes of the contract too: a panicking
//! decision is answered `500 internal_error`, and an allowed verdict whose identity or upstream
//! credential cannot be sent (not header-safe, or not fitting the negotiated max-frame-size) is
//! refused (500 / 503) rather than sent incomplete (see [`render`]). `idgate explain` renders
//! its verdict with the same [`render`], so it shows exactly what the agent answers.
//!
//! | module | does |
//! |---|---|
//! | `mod.rs` | the message, argument and variable names, the caps, [`answer`] |
//! | `request.rs` | NOTIFY messages -> [`AuthzRequest`](crate::decision::AuthzRequest) ([`request_from_messages`]) |
//! | `render.rs` | [`Verdict`] -> variables, fitted into the frame ([`render`], [`Answer`]) |
//!
//! The wire encoding (TYPED-DATA, SET-VAR, frame sizes) is [`crate::spop`]'s: this layer
//! produces typed values ([`crate::spop::TypedValue`]) borrowed from the verdict.

mod render;
mod request;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures_util::FutureExt;

use crate::decision::{Authorizer, Reason, Verdict};
use crate::spop::Notify;

pub use render::{render, Actions, Answer};
pub use request::request_from_messages;

/// The SPOE message name HAProxy sends (contract §2).
pub(crate) const MESSAGE_NAME: &str = "authorize";

/// The same message carrying the body of a model-serving invocation (contract §2, §8): its
/// own name so that HAProxy sends `body` only for those requests.
pub(crate) const SERVING_MESSAGE_NAME: &str = "authorize-serving";

/// The arguments of the `authorize` message (contract §2), by name.
pub(crate) mod arg {
    pub(crate) const METHOD: &[u8] = b"method";
    pub(crate) const PATH: &[u8] = b"path";
    pub(crate) const HOST: &[u8] = b"host";
    pub(crate) const AUTHORIZATION: &[u8] = b"authorization";
    pub(crate) const COOKIE: &[u8] = b"cookie";
    pub(crate) const SRC: &[u8] = b"src";
    pub(crate) const UNIQUE_ID: &[u8] = b"unique_id";
    pub(crate) const BODY: &[u8] = b"body";
    pub(crate) const CONTENT_TYPE: &[u8] = b"content_type";
    /// Not in the contract (unknown arguments are ignored): `req.body_size`, the length the
    /// request announced, so a body cut to fit the frame is known to be incomplete.
    pub(crate) const BODY_SIZE: &[u8] = b"body_size";
}

/// The variables (contract §3), in the order the ACK sets them: most important first, so that
/// what is dropped to make an ACK fit comes from the end. With `option var-prefix idgate` they
/// appear in HAProxy as `txn.idgate.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Var {
    Allow,
    Status,
    Reason,
    WwwAuthenticate,
    UpstreamAuthorization,
    UpstreamHost,
    UpstreamPath,
    Principal,
    Sub,
    User,
    Issuer,
    Rule,
    Email,
    Groups,
    Description,
}

impl Var {
    /// Every variable, in ACK order.
    pub(crate) const ALL: [Var; 15] = [
        Var::Allow,
        Var::Status,
        Var::Reason,
        Var::WwwAuthenticate,
        Var::UpstreamAuthorization,
        Var::UpstreamHost,
        Var::UpstreamPath,
        Var::Principal,
        Var::Sub,
        Var::User,
        Var::Issuer,
        Var::Rule,
        Var::Email,
        Var::Groups,
        Var::Description,
    ];

    /// The variable's name (part of the contract).
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Var::Allow => "allow",
            Var::Status => "status",
            Var::Reason => "reason",
            Var::WwwAuthenticate => "www_authenticate",
            Var::UpstreamAuthorization => "upstream_authorization",
            Var::UpstreamHost => "upstream_host",
            Var::UpstreamPath => "upstream_path",
            Var::Principal => "principal",
            Var::Sub => "sub",
            Var::User => "user",
            Var::Issuer => "issuer",
            Var::Rule => "rule",
            Var::Email => "email",
            Var::Groups => "groups",
            Var::Description => "description",
        }
    }

    /// The variable with this name.
    #[cfg(test)]
    pub(crate) fn from_name(name: &str) -> Option<Var> {
        Var::ALL.into_iter().find(|v| v.name() == name)
    }
}

/// Cap for identity values (`sub`, `email`, `issuer`, `rule`, `principal`), and cap for the
/// comma-joined `groups` (8192: Entra ID's 200 groups of 36-byte object IDs take 7,399 bytes).
/// The authenticator refuses tokens whose values exceed them (`claim_invalid`), so an allowed
/// verdict always fits; here they are the second line (see [`render`]).
pub(crate) use crate::auth::{GROUPS_CAP, IDENTITY_CAP};

/// Cap for `www_authenticate` (our own text: realm plus a short description).
pub(crate) const CHALLENGE_CAP: usize = 1024;

/// The ACK for one NOTIFY: the ids to echo and the rendered variables.
#[derive(Debug)]
pub struct Ack {
    pub stream_id: u64,
    pub frame_id: u64,
    pub answer: Answer,
}

impl Ack {
    /// The set-var actions to send (see [`Answer::actions`]).
    pub fn actions(&self) -> Actions<'_> {
        self.answer.actions()
    }
}

/// Answer one NOTIFY: map its `authorize` message to a request, let `authorizer` decide, and
/// render the verdict into variables that fit an ACK of at most `max_frame_size` bytes (the
/// negotiated size), whatever the ids. A decision that panics is answered `500
/// internal_error`: every NOTIFY gets exactly one ACK. `started`: when the shell took the
/// NOTIFY up (its clock reading serves the decision and the recorded latency).
///
/// Hot path: the request's strings share the NOTIFY frame's buffer (only the decoded message
/// list is dropped before the decision runs), and the variables borrow from the verdict the
/// [`Ack`] owns: no copy of a token, a credential or an identity value.
pub async fn answer<A: Authorizer>(
    authorizer: &A,
    notify: Notify,
    max_frame_size: u32,
    started: Instant,
) -> Ack {
    let Notify {
        stream_id,
        frame_id,
        messages,
    } = notify;
    let req = request_from_messages(&messages);
    // The request holds slices of the frame: the message list itself is no longer needed.
    drop(messages);
    let verdict = AssertUnwindSafe(authorizer.authorize(&req, started))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            tracing::error!("authorizer panicked; answering internal_error");
            Verdict::deny(Reason::InternalError)
        });
    let answer = render(verdict, max_frame_size);
    // Audit and metrics say what HAProxy is told, also when rendering refused an allow.
    match answer.refused() {
        None => authorizer.record(&req, answer.verdict(), started.elapsed()),
        Some(reason) => {
            let v = answer.verdict();
            let sent = Verdict {
                identity: v.identity.clone(),
                rule: v.rule.clone(),
                ..Verdict::deny(reason)
            };
            authorizer.record(&req, &sent, started.elapsed());
        }
    }
    Ack {
        stream_id,
        frame_id,
        answer,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::decision::AuthzRequest;
    use crate::spop::frame::{self, Arg, Message};
    use crate::spop::{Action, Scope, TypedData};

    fn ready<F: Future>(fut: F) -> F::Output {
        match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("did not complete on its first poll"),
        }
    }

    /// The var-prefix the shipped SPOE file uses.
    const VAR_PREFIX: &str = "idgate";

    /// HAProxy builds `<scope>.<prefix>.<name>` in a `char[64]`: 3.x rejects longer names, 2.6
    /// truncates them. Our longest, `txn.idgate.upstream_authorization`, is 33 bytes.
    const MAX_FULL_VAR_NAME: usize = 63;

    #[test]
    fn full_variable_names_stay_under_64_bytes() {
        for v in Var::ALL {
            let full = format!("txn.{VAR_PREFIX}.{}", v.name());
            assert!(full.len() <= MAX_FULL_VAR_NAME, "{full}");
            assert_eq!(Var::from_name(v.name()), Some(v));
        }
        assert_eq!(
            format!("txn.{VAR_PREFIX}.{}", Var::UpstreamAuthorization.name()).len(),
            33
        );
        assert_eq!(Var::from_name("nope"), None);
    }

    /// Allows when the request has a path, and echoes it as the rule name.
    struct Echo;

    impl Authorizer for Echo {
        async fn authorize(&self, req: &AuthzRequest, _now: std::time::Instant) -> Verdict {
            match &req.path {
                Some(p) => Verdict {
                    rule: Some((&**p).into()),
                    ..Verdict::allow(Reason::Ok)
                },
                None => Verdict::deny(Reason::BadRequest),
            }
        }
    }

    /// Allows with an upstream credential of `len` bytes and records what it is told was sent.
    struct Recording {
        len: usize,
        sent: std::sync::Mutex<Vec<(bool, Reason, Option<String>)>>,
    }

    impl Authorizer for Recording {
        async fn authorize(&self, _req: &AuthzRequest, _now: std::time::Instant) -> Verdict {
            Verdict {
                rule: Some("r".into()),
                upstream_authorization: Some(format!("Bearer {}", "x".repeat(self.len)).into()),
                ..Verdict::allow(Reason::Ok)
            }
        }

        fn record(&self, req: &AuthzRequest, sent: &Verdict, _elapsed: std::time::Duration) {
            assert_eq!(
                req.path.as_deref(),
                Some("/p"),
                "the request reaches the record"
            );
            self.sent.lock().unwrap().push((
                sent.allow,
                sent.reason,
                sent.rule.as_deref().map(str::to_owned),
            ));
        }
    }

    #[test]
    fn the_record_is_what_haproxy_is_sent() {
        // Fits: recorded as the allow it is.
        let fits = Recording {
            len: 100,
            sent: Default::default(),
        };
        let ack = ready(answer(
            &fits,
            notify(1, 1, Some("/p")),
            16380,
            Instant::now(),
        ));
        assert!(ack.answer.allowed());
        assert_eq!(
            *fits.sent.lock().unwrap(),
            vec![(true, Reason::Ok, Some("r".into()))]
        );
        // Too big for the frame: refused at rendering, and recorded as that refusal (the audit
        // line and the decision metrics must not say "allow" for a request HAProxy denies).
        let too_big = Recording {
            len: 1000,
            sent: Default::default(),
        };
        let ack = ready(answer(
            &too_big,
            notify(1, 2, Some("/p")),
            256,
            Instant::now(),
        ));
        assert!(!ack.answer.allowed());
        assert_ne!(ack.answer.reason(), Reason::Ok);
        assert_eq!(
            *too_big.sent.lock().unwrap(),
            vec![(false, ack.answer.reason(), Some("r".into()))]
        );
    }

    struct Panics;

    impl Authorizer for Panics {
        async fn authorize(&self, _req: &AuthzRequest, _now: std::time::Instant) -> Verdict {
            panic!("boom")
        }
    }

    fn notify(sid: u64, fid: u64, path: Option<&'static str>) -> Notify {
        let args = path
            .map(|p| Arg {
                name: Bytes::from_static(b"path"),
                value: TypedData::static_str(p),
            })
            .into_iter()
            .collect();
        Notify {
            stream_id: sid,
            frame_id: fid,
            messages: vec![Message {
                name: Bytes::from_static(MESSAGE_NAME.as_bytes()),
                args,
            }],
        }
    }

    fn vars(ack: &Ack) -> Vec<Action> {
        ack.actions().iter().map(|a| a.to_action()).collect()
    }

    #[test]
    fn one_notify_one_ack_with_its_ids() {
        let ack = ready(answer(
            &Echo,
            notify(u64::MAX, 9, Some("/x")),
            16380,
            Instant::now(),
        ));
        assert_eq!((ack.stream_id, ack.frame_id), (u64::MAX, 9));
        assert_eq!(
            vars(&ack),
            [
                Action::set(Scope::Txn, "allow", TypedData::Bool(true)),
                Action::set(Scope::Txn, "status", TypedData::Int64(200)),
                Action::set(Scope::Txn, "reason", TypedData::static_str("ok")),
                Action::set(Scope::Txn, "rule", TypedData::static_str("/x")),
            ]
        );
        let ack = ready(answer(&Echo, notify(1, 1, None), 16380, Instant::now()));
        assert!(!ack.answer.allowed());
        assert_eq!(ack.answer.status(), 400);
        // It encodes into an ACK that fits the smallest frame HAProxy negotiates.
        let mut b = BytesMut::new();
        frame::encode_ack(&mut b, ack.stream_id, ack.frame_id, &ack.actions());
        assert!(b.len() - 4 <= 256);
    }

    #[test]
    fn a_panicking_decision_is_answered_internal_error() {
        let ack = ready(answer(
            &Panics,
            notify(3, 1, Some("/")),
            16380,
            Instant::now(),
        ));
        assert_eq!((ack.stream_id, ack.frame_id), (3, 1));
        assert_eq!(
            vars(&ack),
            [
                Action::set(Scope::Txn, "allow", TypedData::Bool(false)),
                Action::set(Scope::Txn, "status", TypedData::Int64(500)),
                Action::set(
                    Scope::Txn,
                    "reason",
                    TypedData::static_str("internal_error")
                ),
                Action::set(
                    Scope::Txn,
                    "description",
                    TypedData::static_str("the gateway could not decide this request")
                ),
            ]
        );
    }
}
