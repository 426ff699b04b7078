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

use std::net::IpAddr;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::decision::{Authorizer, AuthzRequest, Reason, Rejection, Verdict};
use crate::spop::frame::{self, Action, Message, Scope};
use crate::spop::TypedData;

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

/// Cap for identity values (`sub`, `email`, `issuer`, `rule`, `principal`). Real values are
/// far shorter; a longer one is not sent at all rather than truncated (see [`Strings::identity`]).
pub const IDENTITY_CAP: usize = 1024;
/// Cap for `groups`: the list is cut after the last whole group that fits.
pub const GROUPS_CAP: usize = 4096;
/// Cap for `www_authenticate` (our own text: realm plus a short description).
pub const CHALLENGE_CAP: usize = 1024;

/// Whether `s` can go into an HTTP header value as is: no control characters (C0 including
/// CR, LF, NUL and TAB, DEL, C1).
pub fn header_safe(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// `s` without control characters, cut to `cap` bytes on a char boundary. Only for text we
/// generate ourselves (the challenge), where stripping cannot change whose identity it is.
fn stripped(s: &str, cap: usize) -> String {
    let mut out = String::with_capacity(s.len().min(cap));
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > cap {
            break;
        }
        out.push(c);
    }
    out
}

/// The identity strings of one ACK (`sub`, `email`, `groups`, `issuer`, `rule`, `principal`),
/// copied into one buffer and handed out as [`Bytes`] slices of it.
///
/// `TypedData::String` needs owned bytes while the values belong to the cached [`Identity`]
/// and the verdict, so each is copied once per ACK; copying them all into one buffer makes that
/// one allocation (plus the buffer's shared header) per ACK instead of one per variable and a
/// growing `String` for the groups. This was 7 of the 12 allocations of a cached decision
/// (benches/e2e/profile.sh).
///
/// [`Identity`]: crate::decision::Identity
#[derive(Default)]
struct Strings(BytesMut);

impl Strings {
    /// Room for every value `v` may send, so that the buffer never reallocates.
    fn for_verdict(v: &Verdict) -> Strings {
        let id = v.identity.as_deref();
        let cap = v.principal.as_ref().map_or(0, String::len)
            + v.rule.as_ref().map_or(0, |r| r.len())
            + id.map_or(0, |i| {
                i.sub.len()
                    + i.issuer.len()
                    + i.email.as_ref().map_or(0, String::len)
                    + i.groups
                        .iter()
                        .map(|g| g.len() + 1)
                        .sum::<usize>()
                        .min(GROUPS_CAP)
            });
        Strings(BytesMut::with_capacity(cap))
    }

    /// What was written since the last call, as a STRING value.
    fn take(&mut self) -> TypedData {
        TypedData::String(self.0.split().freeze())
    }

    /// An identity value as sent, or `None` if it cannot be sent faithfully (control
    /// characters or longer than [`IDENTITY_CAP`]). Identity values are never stripped or
    /// truncated: `"admin\0"` stripped would read as `"admin"`, a different identity. A missing
    /// variable is the safe failure (the SPOE file sets identity headers only from what the
    /// agent sent).
    fn identity(&mut self, s: &str) -> Option<TypedData> {
        if s.len() > IDENTITY_CAP || !header_safe(s) {
            return None;
        }
        self.0.extend_from_slice(s.as_bytes());
        Some(self.take())
    }

    /// Groups comma-joined. A group that cannot be represented (empty, a comma inside, control
    /// characters) is left out rather than altered, and the list is cut after the last whole
    /// group within [`GROUPS_CAP`]: a missing group only ever removes access.
    fn groups(&mut self, groups: &[String]) -> Option<TypedData> {
        let start = self.0.len();
        for g in groups {
            if g.is_empty() || g.contains(',') || !header_safe(g) {
                continue;
            }
            let sep = self.0.len() > start;
            if self.0.len() - start + g.len() + usize::from(sep) > GROUPS_CAP {
                break;
            }
            if sep {
                self.0.extend_from_slice(b",");
            }
            self.0.extend_from_slice(g.as_bytes());
        }
        (self.0.len() > start).then(|| self.take())
    }
}

/// `upstream_authorization` must be sent whole or not at all: visible ASCII and spaces only
/// (a credential never needs more).
fn upstream_value(s: &str) -> Option<TypedData> {
    (!s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .then(|| TypedData::String(Bytes::copy_from_slice(s.as_bytes())))
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

fn set(name: &'static str, value: TypedData) -> Action {
    Action::set(Scope::Txn, name, value)
}

/// Whether this action may be dropped to make the ACK fit.
fn is_optional(a: &Action) -> bool {
    let Action::SetVar { name, .. } = a else {
        return true;
    };
    ![
        var::ALLOW,
        var::STATUS,
        var::REASON,
        var::UPSTREAM_AUTHORIZATION,
    ]
    .iter()
    .any(|n| name == n.as_bytes())
}

/// Actions for a verdict, without the size limit.
fn build(v: &Verdict) -> Result<Vec<Action>, Reason> {
    let mut a = Vec::with_capacity(var::ALL.len());
    let mut strings = Strings::for_verdict(v);
    a.push(set(var::ALLOW, TypedData::Bool(v.allow)));
    a.push(set(var::STATUS, TypedData::Int64(i64::from(v.status))));
    a.push(set(var::REASON, TypedData::static_str(v.reason.as_str())));
    if v.status == 401 {
        if let Some(c) = &v.www_authenticate {
            a.push(set(
                var::WWW_AUTHENTICATE,
                TypedData::String(stripped(c, CHALLENGE_CAP).into()),
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
        if let Some(p) = v.principal.as_deref().and_then(|p| strings.identity(p)) {
            a.push(set(var::PRINCIPAL, p));
        }
    }
    if let Some(id) = &v.identity {
        if let Some(s) = strings.identity(&id.sub) {
            a.push(set(var::SUB, s));
        }
        if let Some(s) = strings.identity(&id.issuer) {
            a.push(set(var::ISSUER, s));
        }
    }
    if let Some(s) = v.rule.as_deref().and_then(|r| strings.identity(r)) {
        a.push(set(var::RULE, s));
    }
    if let Some(id) = &v.identity {
        if let Some(s) = id.email.as_deref().and_then(|e| strings.identity(e)) {
            a.push(set(var::EMAIL, s));
        }
        if let Some(s) = strings.groups(&id.groups) {
            a.push(set(var::GROUPS, s));
        }
    }
    Ok(a)
}

/// The ACK actions for `verdict`, fitted into an ACK of at most `max_frame_size` bytes for
/// `(stream_id, frame_id)`.
///
/// If the ACK is too big, optional variables are dropped from the end (groups first).
/// `upstream_authorization` is never truncated or dropped from an allowed request: if it is
/// not header-safe or cannot fit, the verdict becomes `allow=false, 503 upstream_unavailable`
/// (fail closed rather than forward without the credential the rule requires).
pub fn verdict_actions(
    verdict: &Verdict,
    stream_id: u64,
    frame_id: u64,
    max_frame_size: u32,
) -> Vec<Action> {
    let fits = |a: &[Action]| frame::ack_len(stream_id, frame_id, a) <= max_frame_size as usize;
    let mut actions = match build(verdict) {
        Ok(a) => a,
        Err(reason) => {
            tracing::warn!(
                "upstream credential is not header-safe; refusing the request ({reason})"
            );
            build(&unavailable(verdict)).expect("no upstream credential left")
        }
    };
    while !fits(&actions) {
        if let Some(i) = actions.iter().rposition(is_optional) {
            actions.remove(i);
            continue;
        }
        if verdict.allow && verdict.upstream_authorization.is_some() {
            tracing::warn!(
                max_frame_size,
                "upstream credential does not fit the negotiated max-frame-size; refusing the request"
            );
            return verdict_actions(&unavailable(verdict), stream_id, frame_id, max_frame_size);
        }
        // allow/status/reason take < 100 bytes and max-frame-size is at least 256.
        break;
    }
    actions
}

/// The refusal used when an allowed request cannot carry its upstream credential.
fn unavailable(v: &Verdict) -> Verdict {
    Verdict {
        identity: v.identity.clone(),
        rule: v.rule.clone(),
        ..Verdict::deny(Reason::UpstreamUnavailable)
    }
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

    fn names(a: &[Action]) -> Vec<String> {
        a.iter()
            .map(|a| match a {
                Action::SetVar { scope, name, .. } => {
                    assert_eq!(*scope, Scope::Txn);
                    String::from_utf8(name.to_vec()).unwrap()
                }
                Action::UnsetVar { .. } => panic!("unset"),
            })
            .collect()
    }

    fn value<'a>(a: &'a [Action], n: &str) -> Option<&'a TypedData> {
        a.iter().find_map(|a| match a {
            Action::SetVar { name, value, .. } if name == n.as_bytes() => Some(value),
            _ => None,
        })
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
        let a = verdict_actions(&allowed(), 1, 1, 16380);
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
        assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(true)));
        assert_eq!(value(&a, "status"), Some(&TypedData::Int64(200)));
        assert_eq!(value(&a, "reason"), Some(&s("ok")));
        assert_eq!(value(&a, "groups"), Some(&s("eng,ml")));
        assert_eq!(
            value(&a, "upstream_authorization"),
            Some(&s("Bearer dapi123"))
        );
        // The actions encode into an ACK that decodes back to the same list.
        let mut b = BytesMut::new();
        frame::encode_ack(&mut b, 1, 1, &a);
        assert_eq!(decode_actions(b.freeze().slice(11..)).unwrap(), a);
    }

    #[test]
    fn denied_verdicts_set_only_what_the_contract_says() {
        let v = Verdict::unauthorized("idgate", &Rejection::new(Reason::MissingToken, "no token"));
        let a = verdict_actions(&v, 1, 1, 16380);
        assert_eq!(names(&a), ["allow", "status", "reason", "www_authenticate"]);
        assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(false)));
        assert_eq!(
            value(&a, "www_authenticate"),
            Some(&s("Bearer realm=\"idgate\""))
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
        assert_eq!(value(&a, "groups"), Some(&s("eng,ml")));
        let Some(TypedData::String(c)) = value(&a, "www_authenticate") else {
            panic!()
        };
        assert!(!c.iter().any(|b| b.is_ascii_control()));
        assert!(std::str::from_utf8(c).unwrap().contains("tokenexpired"));
        for act in &a {
            if let Action::SetVar {
                value: TypedData::String(v),
                ..
            } = act
            {
                assert!(header_safe(std::str::from_utf8(v).unwrap()));
            }
        }
    }

    #[test]
    fn groups_are_cut_at_a_comma_boundary() {
        let groups: Vec<String> = (0..1000).map(|i| format!("group-{i:04}")).collect();
        let TypedData::String(g) = Strings::default().groups(&groups).unwrap() else {
            panic!()
        };
        assert!(g.len() <= GROUPS_CAP);
        let g = std::str::from_utf8(&g).unwrap();
        assert!(g
            .split(',')
            .all(|x| x.len() == 10 && x.starts_with("group-")));
        assert!(Strings::default().groups(&[]).is_none());
    }

    #[test]
    fn unsafe_upstream_credential_fails_closed() {
        for bad in ["Bearer a\r\nX: y", "", "Bearer \u{e9}"] {
            let v = Verdict {
                upstream_authorization: Some(bad.into()),
                ..allowed()
            };
            let a = verdict_actions(&v, 1, 1, 16380);
            assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(false)), "{bad:?}");
            assert_eq!(value(&a, "status"), Some(&TypedData::Int64(503)));
            assert_eq!(value(&a, "reason"), Some(&s("upstream_unavailable")));
            assert!(value(&a, "upstream_authorization").is_none());
            assert!(value(&a, "principal").is_none());
            assert_eq!(value(&a, "sub"), Some(&s("alice")));
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
        }
        // At 16380 everything fits.
        assert_eq!(names(&verdict_actions(&v, 1, 1, 16380)).len(), 9);
        // A credential that cannot fit turns the verdict into a 503 that does.
        let v = Verdict {
            upstream_authorization: Some(format!("Bearer {}", "t".repeat(300)).into()),
            ..allowed()
        };
        let a = verdict_actions(&v, 1, 1, 256);
        assert_eq!(value(&a, "status"), Some(&TypedData::Int64(503)));
        assert!(frame::ack_len(1, 1, &a) <= 256);
        let a = verdict_actions(&v, 1, 1, 1024);
        assert_eq!(value(&a, "status"), Some(&TypedData::Int64(200)));
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
