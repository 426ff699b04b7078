//! The `authorize` SPOE message (contract §2) and the variables (contract §3).
//!
//! Inbound: [`request_from_messages`] picks the `authorize` message of a NOTIFY and maps its
//! arguments, by name, to an [`AuthzRequest`]. Unknown arguments are ignored; a NULL, a value
//! of the wrong type or a string that is not UTF-8 counts as absent. Strings are
//! [`ByteString`]s sharing the frame's buffer (no copy of the bearer token). A NOTIFY without
//! an `authorize` message becomes a request without arguments, which the decision answers
//! with `400 bad_request`: every NOTIFY still gets exactly one ACK.
//!
//! Outbound: [`verdict_actions`] turns a [`Verdict`] into set-var actions in transaction
//! scope, most important first (`allow`, `status`, `reason`), each set only when the contract
//! says so. Every string is safe to copy into an HTTP header (see [`header_safe`] and the
//! caps below) and the ACK always fits the negotiated max-frame-size.
//!
//! [`FoundationAuthorizer`] is the placeholder decision used until the real engine is wired in.

use std::borrow::Cow;
use std::net::IpAddr;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::decision::{Authorizer, AuthzRequest, Reason, Rejection, Verdict};
use crate::spop::frame::{self, Action, EncodeAction, Message, Scope};
use crate::spop::{data, varint, TypedData};

/// The SPOE message name HAProxy sends (contract §2).
pub const MESSAGE_NAME: &str = "authorize";

/// Variable names (contract §3). With `option var-prefix idgate` they appear in HAProxy as
/// `txn.idgate.<name>`.
pub mod var {
    pub const ALLOW: &str = "allow";
    pub const STATUS: &str = "status";
    pub const REASON: &str = "reason";
    pub const WWW_AUTHENTICATE: &str = "www_authenticate";
    pub const SUB: &str = "sub";
    pub const EMAIL: &str = "email";
    pub const GROUPS: &str = "groups";
    pub const ISSUER: &str = "issuer";
    pub const RULE: &str = "rule";
    pub const PRINCIPAL: &str = "principal";
    pub const UPSTREAM_AUTHORIZATION: &str = "upstream_authorization";
    /// Every variable, in ACK order.
    pub const ALL: [&str; 11] = [
        ALLOW,
        STATUS,
        REASON,
        WWW_AUTHENTICATE,
        UPSTREAM_AUTHORIZATION,
        PRINCIPAL,
        SUB,
        ISSUER,
        RULE,
        EMAIL,
        GROUPS,
    ];
}

/// The var-prefix the shipped SPOE file uses; only for the length check of the full names.
pub const VAR_PREFIX: &str = "idgate";

/// HAProxy builds `<scope>.<prefix>.<name>` in a `char[64]`: 3.x rejects longer names, 2.6
/// truncates them. Our longest, `txn.idgate.upstream_authorization`, is 33 bytes.
pub const MAX_FULL_VAR_NAME: usize = 63;

/// Cap for identity values (`sub`, `email`, `issuer`, `rule`, `principal`), and cap for the
/// comma-joined `groups` (8192: Entra ID's 200 groups of 36-byte object IDs take 7,399 bytes).
/// The authenticator refuses tokens whose values exceed them (`claim_invalid`), so an allowed
/// verdict always fits; here they are the second line (see `identity_value`, `groups_value`).
pub use crate::auth::{GROUPS_CAP, IDENTITY_CAP};
/// Cap for `www_authenticate` (our own text: realm plus a short description).
pub const CHALLENGE_CAP: usize = 1024;

/// Whether `s` can go into an HTTP header value as is: no control characters (C0 including
/// CR, LF, NUL and TAB, DEL, C1).
pub fn header_safe(s: &str) -> bool {
    let b = s.as_bytes();
    // Fast path, printable ASCII only; a branch-free fold so it vectorizes.
    if b.iter().fold(true, |ok, &c| ok & (0x20..0x7f).contains(&c)) {
        return true;
    }
    // Byte scan instead of decoding chars: the control characters are exactly the bytes
    // 0x00..=0x1F and 0x7F, and C1 (U+0080..=U+009F), which UTF-8 encodes as C2 80..=C2 9F.
    !b.iter().enumerate().any(|(i, &c)| {
        c < 0x20
            || c == 0x7f
            || (c == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    })
}

/// `s` without control characters, cut to `cap` bytes on a char boundary. Only for text we
/// generate ourselves (the challenge), where stripping cannot change whose identity it is.
fn stripped(s: &str, cap: usize) -> Cow<'_, str> {
    if s.len() <= cap && header_safe(s) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len().min(cap));
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > cap {
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// An identity value as sent, or `None` if it cannot be sent faithfully (control characters
/// or longer than [`IDENTITY_CAP`]). Identity values are never stripped or truncated: `"admin\0"`
/// stripped would read as `"admin"`, a different identity. A missing variable is the safe
/// failure (the SPOE file sets identity headers only from what the agent sent).
fn identity_value(s: &str) -> Option<VarValue<'_>> {
    (s.len() <= IDENTITY_CAP && header_safe(s)).then_some(VarValue::Str(Cow::Borrowed(s)))
}

/// Groups comma-joined, and whether that is all of them. A group that cannot be represented
/// (empty, a comma inside, control characters) is left out rather than altered, and the list is
/// cut after the last whole group within [`GROUPS_CAP`]. An incomplete list is only ever sent
/// with a refusal (where it is informational); an allowed verdict whose list is incomplete is
/// refused instead (see [`build`]).
fn groups_value(groups: &[String]) -> (Option<VarValue<'static>>, bool) {
    let total: usize = groups.iter().map(|g| g.len() + 1).sum();
    let mut out = String::with_capacity(total.min(GROUPS_CAP));
    let mut complete = true;
    for g in groups {
        if g.is_empty() || g.contains(',') || !header_safe(g) {
            complete = false;
            continue;
        }
        let extra = g.len() + usize::from(!out.is_empty());
        if out.len() + extra > GROUPS_CAP {
            complete = false;
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(g);
    }
    (
        (!out.is_empty()).then_some(VarValue::Str(Cow::Owned(out))),
        complete,
    )
}

/// `upstream_authorization` must be sent whole or not at all: visible ASCII and spaces only
/// (a credential never needs more).
fn upstream_value(s: &str) -> Option<VarValue<'_>> {
    (!s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .then_some(VarValue::Str(Cow::Borrowed(s)))
}

// ----- inbound -----

fn string_arg(v: &TypedData) -> Option<ByteString> {
    match v {
        TypedData::String(b) => ByteString::try_from(b.clone()).ok(),
        _ => None,
    }
}

fn ip_arg(v: &TypedData) -> Option<IpAddr> {
    match *v {
        TypedData::Ipv4(a) => Some(IpAddr::V4(a)),
        TypedData::Ipv6(a) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

/// Build the request from a NOTIFY's messages (the first `authorize` message; for an
/// argument given twice, the first valid value).
pub fn request_from_messages(messages: &[Message]) -> AuthzRequest {
    let mut r = AuthzRequest::default();
    let Some(m) = messages.iter().find(|m| m.name == MESSAGE_NAME.as_bytes()) else {
        return r;
    };
    for arg in &m.args {
        let slot = match &arg.name[..] {
            b"method" => &mut r.method,
            b"path" => &mut r.path,
            b"host" => &mut r.host,
            b"authorization" => &mut r.authorization,
            b"cookie" => &mut r.cookie,
            b"unique_id" => &mut r.unique_id,
            b"src" => {
                if r.src.is_none() {
                    r.src = ip_arg(&arg.value);
                }
                continue;
            }
            _ => continue,
        };
        if slot.is_none() {
            *slot = string_arg(&arg.value);
        }
    }
    r
}

// ----- outbound -----

/// The value of one of our variables, borrowed from the verdict where possible (the ACK is
/// encoded straight from it; no intermediate `Bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarValue<'a> {
    /// BOOL.
    Bool(bool),
    /// INT64 (HAProxy reads every integer type as a signed 64-bit sample).
    Int(i64),
    /// STRING.
    Str(Cow<'a, str>),
}

impl VarValue<'_> {
    fn into_owned(self) -> VarValue<'static> {
        match self {
            VarValue::Bool(b) => VarValue::Bool(b),
            VarValue::Int(i) => VarValue::Int(i),
            VarValue::Str(s) => VarValue::Str(Cow::Owned(s.into_owned())),
        }
    }

    /// The same value as wire-level typed data.
    pub fn to_typed(&self) -> TypedData {
        match self {
            VarValue::Bool(b) => TypedData::Bool(*b),
            VarValue::Int(i) => TypedData::Int64(*i),
            VarValue::Str(s) => TypedData::String(Bytes::copy_from_slice(s.as_bytes())),
        }
    }
}

/// One `set-var` in transaction scope (scope byte `02`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetVar<'a> {
    /// One of [`var`].
    pub name: &'static str,
    pub value: VarValue<'a>,
}

impl SetVar<'_> {
    /// The general [`Action`] form (tests, tools).
    pub fn to_action(&self) -> Action {
        Action::set(Scope::Txn, self.name, self.value.to_typed())
    }

    fn into_owned(self) -> SetVar<'static> {
        SetVar {
            name: self.name,
            value: self.value.into_owned(),
        }
    }
}

impl EncodeAction for SetVar<'_> {
    fn encoded_len(&self) -> usize {
        frame::set_var_head_len(self.name.as_bytes())
            + match &self.value {
                VarValue::Bool(_) => 1,
                VarValue::Int(i) => 1 + varint::encoded_len(*i as u64),
                VarValue::Str(s) => 1 + data::bare_len(s.as_bytes()),
            }
    }

    fn encode(&self, buf: &mut BytesMut) {
        frame::put_set_var_head(buf, Scope::Txn, self.name.as_bytes());
        match &self.value {
            VarValue::Bool(b) => TypedData::Bool(*b).encode(buf),
            VarValue::Int(i) => TypedData::Int64(*i).encode(buf),
            VarValue::Str(s) => {
                buf.put_u8(data::type_id::STRING);
                data::encode_bare(s.as_bytes(), buf);
            }
        }
    }
}

fn set<'a>(name: &'static str, value: VarValue<'a>) -> SetVar<'a> {
    SetVar { name, value }
}

/// The variables that are never dropped to make an ACK fit: the verdict itself and, when
/// allowed, everything the request is forwarded with.
const ALWAYS: [&str; 4] = [
    var::ALLOW,
    var::STATUS,
    var::REASON,
    var::UPSTREAM_AUTHORIZATION,
];

/// The identity an allowed request is forwarded with: headers such as `X-Forwarded-User` and
/// HAProxy's per-identity rate limit (keyed on `sub`) depend on them, so an allowed verdict is
/// never sent without them (each one the verdict has).
const IDENTITY_VARS: [&str; 5] = [
    var::PRINCIPAL,
    var::SUB,
    var::ISSUER,
    var::EMAIL,
    var::GROUPS,
];

/// Whether this variable may be dropped to make the ACK fit: for a refusal everything but the
/// verdict, for an allowed request only `rule` (and nothing it is forwarded with).
fn is_optional(a: &SetVar<'_>, allow: bool) -> bool {
    let kept = ALWAYS.contains(&a.name) || (allow && IDENTITY_VARS.contains(&a.name));
    !kept
}

/// Variables for a verdict, without the size limit. `Err(UpstreamUnavailable)` if the upstream
/// credential cannot be sent, `Err(InternalError)` if an allowed verdict's identity cannot be
/// sent whole (not header-safe, over a cap, a group left out): the authenticator refuses such
/// tokens, so this is the second line.
fn build(v: &Verdict) -> Result<Vec<SetVar<'_>>, Reason> {
    let mut a = Vec::with_capacity(var::ALL.len());
    a.push(set(var::ALLOW, VarValue::Bool(v.allow)));
    a.push(set(var::STATUS, VarValue::Int(i64::from(v.status))));
    a.push(set(
        var::REASON,
        VarValue::Str(Cow::Borrowed(v.reason.as_str())),
    ));
    if v.status == 401 {
        if let Some(c) = &v.www_authenticate {
            a.push(set(
                var::WWW_AUTHENTICATE,
                VarValue::Str(stripped(c, CHALLENGE_CAP)),
            ));
        }
    }
    if v.allow {
        if let Some(ua) = &v.upstream_authorization {
            a.push(set(
                var::UPSTREAM_AUTHORIZATION,
                upstream_value(ua).ok_or(Reason::UpstreamUnavailable)?,
            ));
        }
        if let Some(p) = &v.principal {
            push_identity(&mut a, var::PRINCIPAL, p, true)?;
        }
    }
    if let Some(id) = &v.identity {
        push_identity(&mut a, var::SUB, &id.sub, v.allow)?;
        push_identity(&mut a, var::ISSUER, &id.issuer, v.allow)?;
    }
    if let Some(s) = v.rule.as_deref().and_then(identity_value) {
        a.push(set(var::RULE, s));
    }
    if let Some(id) = &v.identity {
        if let Some(e) = &id.email {
            push_identity(&mut a, var::EMAIL, e, v.allow)?;
        }
        let (groups, complete) = groups_value(&id.groups);
        if v.allow && !complete {
            return Err(Reason::InternalError);
        }
        if let Some(s) = groups {
            a.push(set(var::GROUPS, s));
        }
    }
    Ok(a)
}

/// Push identity variable `name` with value `s`, or, when it cannot be sent faithfully
/// ([`identity_value`]): leave it out of a refusal, refuse an allowed request (`required`).
fn push_identity<'a>(
    a: &mut Vec<SetVar<'a>>,
    name: &'static str,
    s: &'a str,
    required: bool,
) -> Result<(), Reason> {
    match identity_value(s) {
        Some(value) => a.push(set(name, value)),
        None if required => return Err(Reason::InternalError),
        None => {}
    }
    Ok(())
}

/// The ACK variables for `verdict`, fitted into an ACK of at most `max_frame_size` bytes for
/// `(stream_id, frame_id)`. Pass them to [`crate::spop::Connection::send_ack`].
///
/// If the ACK is too big, optional variables are dropped from the end: for a refusal anything
/// but `allow`, `status` and `reason` (groups first); for an allowed request only `rule`. An
/// allowed request is never answered without what it is forwarded with; instead it is refused
/// (fail closed rather than forward with less than the rule and the token say):
/// - `upstream_authorization` not header-safe, or not fitting even alone:
///   `allow=false, 503 upstream_unavailable`;
/// - `sub`, `issuer`, `email` (when the identity has one), `groups` (when it has any) or
///   `principal` (when the rule names one) not representable whole, or not fitting:
///   `allow=false, 500 internal_error`. The authenticator already refuses identities that
///   cannot be sent, so in practice this means HAProxy's max-frame-size is too small for the
///   identity (e.g. hundreds of groups): raise `tune.bufsize` or stop sending `groups`.
pub fn verdict_actions(
    verdict: &Verdict,
    stream_id: u64,
    frame_id: u64,
    max_frame_size: u32,
) -> Vec<SetVar<'_>> {
    let fits = |a: &[SetVar<'_>]| frame::ack_len(stream_id, frame_id, a) <= max_frame_size as usize;
    let mut actions = match build(verdict) {
        Ok(a) => a,
        Err(reason) => {
            if reason == Reason::UpstreamUnavailable {
                tracing::warn!("upstream credential is not header-safe; refusing the request");
            } else {
                tracing::warn!(
                    "identity of an allowed request cannot be sent whole; refusing the request"
                );
            }
            return refuse(verdict, reason, stream_id, frame_id, max_frame_size);
        }
    };
    while !fits(&actions) {
        if let Some(i) = actions.iter().rposition(|a| is_optional(a, verdict.allow)) {
            actions.remove(i);
            continue;
        }
        if verdict.allow {
            let credential_only: Vec<SetVar<'_>> = actions
                .iter()
                .filter(|a| ALWAYS.contains(&a.name))
                .cloned()
                .collect();
            let reason = if fits(&credential_only) {
                Reason::InternalError
            } else {
                Reason::UpstreamUnavailable
            };
            tracing::warn!(
                max_frame_size,
                "the variables of an allowed request do not fit the negotiated max-frame-size; refusing the request ({reason})"
            );
            return refuse(verdict, reason, stream_id, frame_id, max_frame_size);
        }
        // allow/status/reason take < 100 bytes and max-frame-size is at least 256.
        break;
    }
    actions
}

/// The variables of a refusal (`reason` with its status) for an allowed request that cannot be
/// answered as such (identity and rule kept for the logs).
fn refuse(
    v: &Verdict,
    reason: Reason,
    stream_id: u64,
    frame_id: u64,
    max_frame_size: u32,
) -> Vec<SetVar<'static>> {
    let refused = Verdict {
        identity: v.identity.clone(),
        rule: v.rule.clone(),
        ..Verdict::deny(reason)
    };
    verdict_actions(&refused, stream_id, frame_id, max_frame_size)
        .into_iter()
        .map(SetVar::into_owned)
        .collect()
}

// ----- placeholder decision -----

/// The decision used until the token engine lands: it validates nothing, so it never allows.
/// Missing (or empty) `method`/`path` gives `400 bad_request`; no (or an empty)
/// `authorization` gives `401 missing_token` with `Bearer realm="<realm>"`; anything else
/// `401 unsupported_token`.
#[derive(Debug, Clone)]
pub struct FoundationAuthorizer {
    realm: String,
}

impl FoundationAuthorizer {
    pub fn new(realm: impl Into<String>) -> Self {
        FoundationAuthorizer {
            realm: realm.into(),
        }
    }

    /// The decision, synchronously.
    pub fn decide(&self, req: &AuthzRequest) -> Verdict {
        let present = |s: &Option<ByteString>| s.as_ref().is_some_and(|s| !s.trim().is_empty());
        if !present(&req.method) || !present(&req.path) {
            return Verdict::deny(Reason::BadRequest);
        }
        if !present(&req.authorization) {
            return Verdict::unauthorized(
                &self.realm,
                &Rejection::new(Reason::MissingToken, "no token"),
            );
        }
        Verdict::unauthorized(
            &self.realm,
            &Rejection::new(
                Reason::UnsupportedToken,
                "token validation is not configured",
            ),
        )
    }
}

impl Default for FoundationAuthorizer {
    fn default() -> Self {
        FoundationAuthorizer::new("idgate")
    }
}

impl Authorizer for FoundationAuthorizer {
    async fn authorize(&self, req: AuthzRequest) -> Verdict {
        self.decide(&req)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Arc;

    use bytes::BytesMut;

    use super::*;
    use crate::decision::Identity;
    use crate::spop::frame::{decode_actions, Arg};

    fn arg(name: &'static str, value: TypedData) -> Arg {
        Arg {
            name: Bytes::from_static(name.as_bytes()),
            value,
        }
    }

    fn msg(name: &'static str, args: Vec<Arg>) -> Message {
        Message {
            name: Bytes::from_static(name.as_bytes()),
            args,
        }
    }

    fn s(v: &'static str) -> TypedData {
        TypedData::static_str(v)
    }

    #[test]
    fn maps_every_contract_argument_by_name() {
        let m = msg(
            "authorize",
            vec![
                arg("unique_id", s("abc-1")),
                arg("src", TypedData::Ipv4(Ipv4Addr::new(10, 1, 2, 3))),
                arg("cookie", s("a=b")),
                arg("authorization", s("Bearer x.y.z")),
                arg("host", s("api.example.com")),
                arg("path", s("/v1/x")),
                arg("method", s("POST")),
                arg("extra", TypedData::Int64(5)),
            ],
        );
        let r = request_from_messages(&[m]);
        assert_eq!(r.method.as_deref(), Some("POST"));
        assert_eq!(r.path.as_deref(), Some("/v1/x"));
        assert_eq!(r.host.as_deref(), Some("api.example.com"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer x.y.z"));
        assert_eq!(r.cookie.as_deref(), Some("a=b"));
        assert_eq!(r.unique_id.as_deref(), Some("abc-1"));
        assert_eq!(r.src, Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))));
        let r = request_from_messages(&[msg(
            "authorize",
            vec![arg("src", TypedData::Ipv6(Ipv6Addr::LOCALHOST))],
        )]);
        assert_eq!(r.src, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    #[test]
    fn null_wrong_type_and_invalid_utf8_are_absent() {
        let m = msg(
            "authorize",
            vec![
                arg("method", TypedData::Null),
                arg("path", TypedData::Binary(Bytes::from_static(b"/x"))),
                arg("host", TypedData::Int64(1)),
                arg(
                    "authorization",
                    TypedData::String(Bytes::from_static(b"Bearer \xff\xfe")),
                ),
                arg("src", s("127.0.0.1")),
                arg("unique_id", TypedData::Bool(true)),
            ],
        );
        let r = request_from_messages(&[m]);
        assert!(r.method.is_none() && r.path.is_none() && r.host.is_none());
        assert!(r.authorization.is_none() && r.src.is_none() && r.unique_id.is_none());
    }

    #[test]
    fn first_authorize_message_and_first_valid_value_win() {
        let other = msg("check-request", vec![arg("method", s("DELETE"))]);
        let m = msg(
            "authorize",
            vec![
                arg("method", TypedData::Null),
                arg("method", s("GET")),
                arg("method", s("PUT")),
            ],
        );
        let second = msg("authorize", vec![arg("path", s("/second"))]);
        let r = request_from_messages(&[other.clone(), m, second]);
        assert_eq!(r.method.as_deref(), Some("GET"));
        assert!(r.path.is_none());
        let r = request_from_messages(&[other]);
        assert!(r.method.is_none(), "no authorize message: no arguments");
        assert!(request_from_messages(&[]).method.is_none());
    }

    /// The bearer token in the request is a slice of the NOTIFY frame, not a copy.
    #[test]
    fn strings_share_the_frame_buffer() {
        let token = "Bearer ".to_owned() + &"a".repeat(1000);
        let mut f = BytesMut::new();
        frame::encode_notify(
            &mut f,
            1,
            1,
            &[msg(
                "authorize",
                vec![arg(
                    "authorization",
                    TypedData::String(token.clone().into()),
                )],
            )],
        );
        let frame = f.freeze();
        let messages = frame::decode_messages(frame.slice(11..)).unwrap();
        let r = request_from_messages(&messages);
        let got = r.authorization.unwrap();
        assert_eq!(&*got, token);
        let start = frame.as_ptr() as usize;
        let p = got.as_ptr() as usize;
        assert!(
            p >= start && p < start + frame.len(),
            "token points into the frame"
        );
    }

    fn identity() -> Arc<Identity> {
        Arc::new(Identity {
            issuer: "corp".into(),
            sub: "alice".into(),
            email: Some("alice@example.com".into()),
            groups: vec!["eng".into(), "ml".into()],
            scopes: vec![],
            expires_at: 0,
            claims: Default::default(),
        })
    }

    fn names(a: &[SetVar<'_>]) -> Vec<&'static str> {
        a.iter().map(|a| a.name).collect()
    }

    fn value<'a>(a: &'a [SetVar<'a>], n: &str) -> Option<&'a VarValue<'a>> {
        a.iter().find(|a| a.name == n).map(|a| &a.value)
    }

    fn st(v: &'static str) -> VarValue<'static> {
        VarValue::Str(Cow::Borrowed(v))
    }

    fn allowed() -> Verdict {
        Verdict {
            identity: Some(identity()),
            rule: Some("serving".into()),
            principal: Some("sp-1".into()),
            upstream_authorization: Some("Bearer dapi123".into()),
            ..Verdict::allow(Reason::Ok)
        }
    }

    #[test]
    fn allowed_verdict_sets_everything_most_important_first() {
        let v = allowed();
        let a = verdict_actions(&v, 1, 1, 16380);
        assert_eq!(
            names(&a),
            [
                "allow",
                "status",
                "reason",
                "upstream_authorization",
                "principal",
                "sub",
                "issuer",
                "rule",
                "email",
                "groups"
            ]
        );
        assert_eq!(value(&a, "allow"), Some(&VarValue::Bool(true)));
        assert_eq!(value(&a, "status"), Some(&VarValue::Int(200)));
        assert_eq!(value(&a, "reason"), Some(&st("ok")));
        assert_eq!(value(&a, "groups"), Some(&st("eng,ml")));
        assert_eq!(
            value(&a, "upstream_authorization"),
            Some(&st("Bearer dapi123"))
        );
        // They encode into an ACK that decodes back to the same variables, txn scope.
        let mut b = BytesMut::new();
        frame::encode_ack(&mut b, 1, 1, &a);
        assert_eq!(b.len(), 4 + frame::ack_len(1, 1, &a));
        let expected: Vec<Action> = a.iter().map(SetVar::to_action).collect();
        assert_eq!(decode_actions(b.freeze().slice(11..)).unwrap(), expected);
        assert!(expected.iter().all(|x| matches!(
            x,
            Action::SetVar {
                scope: Scope::Txn,
                ..
            }
        )));
    }

    #[test]
    fn denied_verdicts_set_only_what_the_contract_says() {
        let v = Verdict::unauthorized("idgate", &Rejection::new(Reason::MissingToken, "no token"));
        let a = verdict_actions(&v, 1, 1, 16380);
        assert_eq!(names(&a), ["allow", "status", "reason", "www_authenticate"]);
        assert_eq!(value(&a, "allow"), Some(&VarValue::Bool(false)));
        assert_eq!(
            value(&a, "www_authenticate"),
            Some(&st("Bearer realm=\"idgate\""))
        );
        // 403 with a valid identity: identity and rule, no principal, no credential, no challenge.
        let v = Verdict {
            www_authenticate: Some("Bearer".into()),
            ..allowed()
        };
        let v = Verdict {
            allow: false,
            status: 403,
            reason: Reason::DeniedByRule,
            ..v
        };
        let a = verdict_actions(&v, 1, 1, 16380);
        assert_eq!(
            names(&a),
            ["allow", "status", "reason", "sub", "issuer", "rule", "email", "groups"]
        );
    }

    #[test]
    fn strings_are_header_safe() {
        let mut id = (*identity()).clone();
        id.sub = "admin\r\nX-Evil: 1".into();
        id.email = Some("a\u{0}@x".into());
        id.groups = vec![
            "eng".into(),
            "a,b".into(),
            "bad\n".into(),
            String::new(),
            "ml".into(),
        ];
        let v = Verdict {
            identity: Some(Arc::new(id)),
            rule: Some("r\u{85}".into()),
            principal: Some("x".repeat(IDENTITY_CAP + 1)),
            ..Verdict::unauthorized(
                "idgate",
                &Rejection::new(Reason::Expired, "token\r\nexpired"),
            )
        };
        let a = verdict_actions(&v, 1, 1, 16380);
        assert_eq!(
            names(&a),
            [
                "allow",
                "status",
                "reason",
                "www_authenticate",
                "issuer",
                "groups"
            ]
        );
        assert_eq!(value(&a, "groups"), Some(&st("eng,ml")));
        let Some(VarValue::Str(c)) = value(&a, "www_authenticate") else {
            panic!()
        };
        assert!(!c.bytes().any(|b| b.is_ascii_control()));
        assert!(c.contains("tokenexpired"));
        for act in &a {
            if let VarValue::Str(v) = &act.value {
                assert!(header_safe(v));
            }
        }
    }

    #[test]
    fn header_safe_matches_char_is_control() {
        let samples = [
            "plain",
            "tab\there",
            "nul\0",
            "del\u{7f}",
            "c1\u{85}x",
            "c1 end\u{9f}",
            "latin \u{a0}\u{e9}",
            "\u{80}",
            "emoji \u{1f600}",
            "\u{2028}",
            "",
        ];
        for s in samples {
            assert_eq!(header_safe(s), !s.chars().any(char::is_control), "{s:?}");
        }
        for c in ('\0'..='\u{3000}').chain(['\u{10ffff}']) {
            let s = format!("a{c}b");
            assert_eq!(header_safe(&s), !c.is_control(), "{c:?}");
        }
    }

    #[test]
    fn groups_are_cut_at_a_comma_boundary() {
        let groups: Vec<String> = (0..1000).map(|i| format!("group-{i:04}")).collect();
        let (Some(VarValue::Str(g)), false) = groups_value(&groups) else {
            panic!()
        };
        assert!(g.len() <= GROUPS_CAP);
        assert!(g
            .split(',')
            .all(|x| x.len() == 10 && x.starts_with("group-")));
        assert_eq!(groups_value(&[]), (None, true));
        let (_, complete) = groups_value(&["a".into(), "b,c".into()]);
        assert!(!complete);
        let (Some(VarValue::Str(g)), true) = groups_value(&["a".into(), "b".into()]) else {
            panic!()
        };
        assert_eq!(g, "a,b");
    }

    fn status_reason<'a>(
        a: &'a [SetVar<'a>],
    ) -> (Option<&'a VarValue<'a>>, Option<&'a VarValue<'a>>) {
        (value(a, "status"), value(a, "reason"))
    }

    /// An allowed verdict is never sent without the identity it is forwarded with: a value the
    /// renderer cannot send whole refuses the request (500 internal_error) instead of leaving
    /// the variable out.
    #[test]
    fn allowed_verdict_never_loses_its_identity() {
        type Change = Box<dyn Fn(&mut Identity, &mut Verdict)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "sub with a control character",
                Box::new(|id, _| id.sub = "a\u{1}".into()),
            ),
            (
                "sub too long",
                Box::new(|id, _| id.sub = "s".repeat(IDENTITY_CAP + 1)),
            ),
            (
                "email with CR LF",
                Box::new(|id, _| id.email = Some("a@b\r\n".into())),
            ),
            (
                "a group with a comma",
                Box::new(|id, _| id.groups.push("a,b".into())),
            ),
            (
                "an empty group",
                Box::new(|id, _| id.groups.push(String::new())),
            ),
            (
                "groups over the cap",
                Box::new(|id, _| id.groups = (0..201).map(|i| format!("{i:040}")).collect()),
            ),
            (
                "principal with NUL",
                Box::new(|_, v| v.principal = Some("p\0".into())),
            ),
        ];
        for (case, f) in cases {
            let mut id = (*identity()).clone();
            let mut v = allowed();
            f(&mut id, &mut v);
            v.identity = Some(Arc::new(id));
            let a = verdict_actions(&v, 1, 1, 16380);
            assert_eq!(value(&a, "allow"), Some(&VarValue::Bool(false)), "{case}");
            assert_eq!(
                status_reason(&a),
                (Some(&VarValue::Int(500)), Some(&st("internal_error"))),
                "{case}"
            );
            assert!(value(&a, "upstream_authorization").is_none(), "{case}");
            assert!(value(&a, "principal").is_none(), "{case}");
            // The same identity on a refusal is sent as far as it can be.
            let denied = Verdict {
                allow: false,
                status: 403,
                reason: Reason::DeniedByRule,
                upstream_authorization: None,
                principal: None,
                ..v.clone()
            };
            let a = verdict_actions(&denied, 1, 1, 16380);
            assert_eq!(value(&a, "reason"), Some(&st("denied_by_rule")), "{case}");
        }
        // 200 Entra object IDs (7,399 bytes) fit, and are sent whole.
        let mut id = (*identity()).clone();
        id.groups = (0..200)
            .map(|i| format!("{i:08x}-0000-4000-8000-{i:012x}"))
            .collect();
        let v = Verdict {
            identity: Some(Arc::new(id)),
            ..allowed()
        };
        let a = verdict_actions(&v, 1, 1, 16380);
        assert_eq!(value(&a, "status"), Some(&VarValue::Int(200)));
        let Some(VarValue::Str(g)) = value(&a, "groups") else {
            panic!()
        };
        assert_eq!(g.len(), 200 * 36 + 199);
    }

    /// With a max-frame-size too small for the identity, an allowed verdict drops only `rule`,
    /// then is refused (500 internal_error) rather than sent without sub/email/groups/principal.
    #[test]
    fn tiny_frames_refuse_allowed_requests_instead_of_dropping_identity() {
        let mut id = (*identity()).clone();
        id.groups = (0..20).map(|i| format!("group-number-{i:02}")).collect();
        let v = Verdict {
            identity: Some(Arc::new(id)),
            upstream_authorization: None,
            ..allowed()
        };
        let full = verdict_actions(&v, 1, 1, 16380);
        assert_eq!(names(&full).len(), 9);
        let need = frame::ack_len(1, 1, &full);
        assert!(need > 256, "{need}");
        // Room for everything but `rule`: rule is dropped, the rest stays.
        let rule_len = full
            .iter()
            .find(|a| a.name == "rule")
            .unwrap()
            .encoded_len();
        let a = verdict_actions(&v, 1, 1, (need - rule_len) as u32);
        assert_eq!(value(&a, "status"), Some(&VarValue::Int(200)));
        assert!(value(&a, "rule").is_none());
        for n in ["principal", "sub", "issuer", "email", "groups"] {
            assert!(value(&a, n).is_some(), "{n} dropped");
        }
        // One byte less: refused, and the refusal fits.
        let mfs = (need - rule_len - 1) as u32;
        let a = verdict_actions(&v, 1, 1, mfs);
        assert_eq!(value(&a, "allow"), Some(&VarValue::Bool(false)));
        assert_eq!(
            status_reason(&a),
            (Some(&VarValue::Int(500)), Some(&st("internal_error")))
        );
        assert!(frame::ack_len(1, 1, &a) <= mfs as usize);
        let a = verdict_actions(&v, 1, 1, 256);
        assert_eq!(value(&a, "reason"), Some(&st("internal_error")));
        assert!(frame::ack_len(1, 1, &a) <= 256);
        // A refusal may still drop its optional variables to fit.
        let denied = Verdict {
            allow: false,
            status: 403,
            reason: Reason::DeniedByRule,
            principal: None,
            ..v.clone()
        };
        let a = verdict_actions(&denied, 1, 1, 256);
        assert_eq!(value(&a, "reason"), Some(&st("denied_by_rule")));
        assert!(value(&a, "groups").is_none());
    }

    #[test]
    fn unsafe_upstream_credential_fails_closed() {
        for bad in ["Bearer a\r\nX: y", "", "Bearer \u{e9}"] {
            let v = Verdict {
                upstream_authorization: Some(bad.into()),
                ..allowed()
            };
            let a = verdict_actions(&v, 1, 1, 16380);
            assert_eq!(value(&a, "allow"), Some(&VarValue::Bool(false)), "{bad:?}");
            assert_eq!(value(&a, "status"), Some(&VarValue::Int(503)));
            assert_eq!(value(&a, "reason"), Some(&st("upstream_unavailable")));
            assert!(value(&a, "upstream_authorization").is_none());
            assert!(value(&a, "principal").is_none());
            assert_eq!(value(&a, "sub"), Some(&st("alice")));
        }
    }

    #[test]
    fn ack_always_fits_the_negotiated_size() {
        let mut id = (*identity()).clone();
        id.groups = (0..1000).map(|i| format!("g{i:05}")).collect();
        id.sub = "s".repeat(IDENTITY_CAP);
        let v = Verdict {
            identity: Some(Arc::new(id)),
            upstream_authorization: None,
            ..allowed()
        };
        for mfs in [256u32, 300, 1024, 4096, 16380] {
            let a = verdict_actions(&v, u64::MAX, u64::MAX, mfs);
            assert!(
                frame::ack_len(u64::MAX, u64::MAX, &a) <= mfs as usize,
                "{mfs}"
            );
            assert_eq!(&names(&a)[..3], ["allow", "status", "reason"]);
            // Too small for the identity: refused, never allowed without it.
            let want = if mfs == 16380 { 200 } else { 500 };
            assert_eq!(value(&a, "status"), Some(&VarValue::Int(want)), "{mfs}");
        }
        // At 16380 everything fits.
        assert_eq!(names(&verdict_actions(&v, 1, 1, 16380)).len(), 9);
        // A credential that cannot fit turns the verdict into a 503 that does.
        let v = Verdict {
            upstream_authorization: Some(format!("Bearer {}", "t".repeat(300)).into()),
            ..allowed()
        };
        let a = verdict_actions(&v, 1, 1, 256);
        assert_eq!(value(&a, "status"), Some(&VarValue::Int(503)));
        assert!(frame::ack_len(1, 1, &a) <= 256);
        let a = verdict_actions(&v, 1, 1, 1024);
        assert_eq!(value(&a, "status"), Some(&VarValue::Int(200)));
        assert!(value(&a, "upstream_authorization").is_some());
    }

    #[test]
    fn full_variable_names_stay_under_64_bytes() {
        for name in var::ALL {
            let full = format!("txn.{VAR_PREFIX}.{name}");
            assert!(full.len() <= MAX_FULL_VAR_NAME, "{full}");
        }
        assert_eq!(
            format!("txn.{VAR_PREFIX}.{}", var::UPSTREAM_AUTHORIZATION).len(),
            33
        );
    }

    #[test]
    fn foundation_authorizer() {
        let f = FoundationAuthorizer::default();
        let req = |m: Option<&'static str>, p: Option<&'static str>, a: Option<&'static str>| {
            AuthzRequest {
                method: m.map(ByteString::from_static),
                path: p.map(ByteString::from_static),
                authorization: a.map(ByteString::from_static),
                ..Default::default()
            }
        };
        let v = f.decide(&req(None, Some("/"), Some("Bearer x")));
        assert_eq!(
            (v.allow, v.status, v.reason),
            (false, 400, Reason::BadRequest)
        );
        let v = f.decide(&req(Some("GET"), Some(""), None));
        assert_eq!(v.reason, Reason::BadRequest);
        let v = f.decide(&req(Some("GET"), Some("/"), None));
        assert_eq!(
            (v.allow, v.status, v.reason),
            (false, 401, Reason::MissingToken)
        );
        assert_eq!(
            v.www_authenticate.as_deref(),
            Some("Bearer realm=\"idgate\"")
        );
        let v = f.decide(&req(Some("GET"), Some("/"), Some(" ")));
        assert_eq!(v.reason, Reason::MissingToken);
        let v = f.decide(&req(Some("GET"), Some("/"), Some("Bearer abc")));
        assert_eq!(
            (v.allow, v.status, v.reason),
            (false, 401, Reason::UnsupportedToken)
        );
        assert!(v.www_authenticate.unwrap().contains("invalid_token"));
        // No authorize message at all: 400.
        let v = f.decide(&request_from_messages(&[]));
        assert_eq!(v.status, 400);
    }
}
