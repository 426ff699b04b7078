//! Outbound: a [`Verdict`] as the variables of an ACK (contract §3), fitted into the frame.
//!
//! [`render`] decides which variables are set, in transaction scope, most important first
//! (`allow`, `status`, `reason`), each only when the contract says so. Every string is safe to
//! copy into an HTTP header (see [`header_safe`] and the caps) and the ACK fits the negotiated
//! max-frame-size whatever its stream and frame ids ([`frame::ack_room`]), so the result
//! depends on the verdict and the frame size only: `idgate explain` shows what the agent sends.
//!
//! An allowed verdict is never sent without what the request is forwarded with; it is refused
//! instead (fail closed rather than forward with less than the rule and the token say):
//! - `upstream_authorization` not printable ASCII, or not fitting even alone:
//!   `allow=false, 503 upstream_unavailable`;
//! - `sub`, `issuer`, `email` (when the identity has one), `groups` (when it has any) or
//!   `principal` (when the rule names one) not representable whole, or not fitting:
//!   `allow=false, 500 internal_error`. The authenticator already refuses identities that
//!   cannot be sent, so in practice this means HAProxy's max-frame-size is too small for the
//!   identity (e.g. hundreds of groups): raise `tune.bufsize` or stop sending `groups`.
//!
//! If the ACK is too big otherwise, optional variables are dropped from the end: for a refusal
//! anything but `allow`, `status` and `reason` (groups first); for an allowed request only
//! `rule`.
//!
//! [`Answer`] keeps the verdict and which variables to send; [`Answer::actions`] lists them as
//! set-var actions borrowing from the verdict (on the stack: no allocation), which
//! [`crate::spop`] encodes.

use std::borrow::{Borrow, Cow};

use super::{Var, CHALLENGE_CAP, GROUPS_CAP, IDENTITY_CAP};
use crate::decision::{Reason, Verdict};
use crate::spop::frame::{self, EncodeAction, SetVar};
use crate::spop::{Scope, TypedValue};

/// Whether `s` can go into an HTTP header value as is: no control characters (C0 including
/// CR, LF, NUL and TAB, DEL, C1).
pub(crate) fn header_safe(s: &str) -> bool {
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

/// Whether an identity value can be sent as is (header-safe, at most [`IDENTITY_CAP`]).
/// Identity values are never stripped or truncated: `"admin\0"` stripped would read as
/// `"admin"`, a different identity. A missing variable is the safe failure (the SPOE file sets
/// identity headers only from what the agent sent).
fn identity_ok(s: &str) -> bool {
    s.len() <= IDENTITY_CAP && header_safe(s)
}

/// `upstream_authorization` must be sent whole or not at all: visible ASCII and spaces only
/// (a credential never needs more).
fn upstream_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// `upstream_host`: a host name or IP literal with an optional port, nothing else (it becomes
/// the Host header, the SNI and the name HAProxy resolves).
fn route_host_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 260
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// `upstream_path`: absolute, visible ASCII, no query or fragment (HAProxy's `set-path` keeps
/// the client's query string).
fn route_path_ok(s: &str) -> bool {
    s.starts_with('/')
        && s.len() <= 2048
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
}

/// Groups comma-joined, and whether that is all of them. A group that cannot be represented
/// (empty, a comma inside, control characters) is left out rather than altered, and the list is
/// cut after the last whole group within [`GROUPS_CAP`]. An incomplete list is only ever sent
/// with a refusal (where it is informational); an allowed verdict whose list is incomplete is
/// refused instead.
fn groups_value(groups: &[String]) -> (Option<String>, bool) {
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
    ((!out.is_empty()).then_some(out), complete)
}

/// A set of variables, one bit per [`Var`] (its ACK position).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct VarSet(u16);

impl VarSet {
    const fn bit(v: Var) -> u16 {
        1 << v as u16
    }

    fn insert(&mut self, v: Var) {
        self.0 |= Self::bit(v);
    }

    fn remove(&mut self, v: Var) {
        self.0 &= !Self::bit(v);
    }

    fn contains(self, v: Var) -> bool {
        self.0 & Self::bit(v) != 0
    }

    /// The members, in ACK order.
    fn iter(self) -> impl Iterator<Item = Var> {
        Var::ALL.into_iter().filter(move |v| self.contains(*v))
    }
}

/// The variables that are never dropped to make an ACK fit: the verdict itself and, when
/// allowed, the credential the request is forwarded with.
const ALWAYS: [Var; 6] = [
    Var::Allow,
    Var::Status,
    Var::Reason,
    Var::UpstreamAuthorization,
    Var::UpstreamHost,
    Var::UpstreamPath,
];

/// Whether `v` may be dropped to make the ACK fit: for a refusal everything but the verdict,
/// for an allowed request only `rule` (the identity is what headers such as `X-Forwarded-User`
/// and HAProxy's per-identity rate limit, keyed on `sub`, are built from).
fn is_optional(v: Var, allowed: bool) -> bool {
    !ALWAYS.contains(&v) && (!allowed || v == Var::Rule)
}

/// A verdict as HAProxy will see it: the decision (`V` is a [`Verdict`] or a reference to one),
/// the refusal it was turned into if it could not be sent as decided, and the variables to set.
#[derive(Debug, Clone)]
pub struct Answer<V: Borrow<Verdict> = Verdict> {
    verdict: V,
    /// Set when an allowed verdict is answered as a refusal (500 or 503, see the module docs).
    refused: Option<Reason>,
    vars: VarSet,
    /// `groups`, comma-joined (when sent).
    groups: Option<String>,
    /// `www_authenticate` when it had to be cleaned up; otherwise the verdict's own is sent.
    challenge: Option<String>,
}

/// The variables of an [`Answer`] as set-var actions, in ACK order, borrowing from it.
/// Dereferences to a slice for [`crate::spop::Connection::send_ack`]. On the stack.
#[derive(Debug, Clone, Copy)]
pub struct Actions<'a> {
    len: usize,
    items: [SetVar<'a>; Var::ALL.len()],
}

impl<'a> std::ops::Deref for Actions<'a> {
    type Target = [SetVar<'a>];

    fn deref(&self) -> &[SetVar<'a>] {
        &self.items[..self.len]
    }
}

/// The variables for `verdict`, fitted into an ACK of at most `max_frame_size` bytes (module
/// docs). The same function serves the agent's ACKs and `idgate explain`.
pub fn render<V: Borrow<Verdict>>(verdict: V, max_frame_size: u32) -> Answer<V> {
    let mut a = Answer {
        verdict,
        refused: None,
        vars: VarSet::default(),
        groups: None,
        challenge: None,
    };
    if let Err(reason) = a.select() {
        if reason == Reason::UpstreamUnavailable {
            tracing::warn!("upstream credential is not header-safe; refusing the request");
        } else {
            tracing::warn!(
                "identity of an allowed request cannot be sent whole; refusing the request"
            );
        }
        a.refuse(reason);
    }
    a.fit(frame::ack_room(max_frame_size));
    a
}

impl<V: Borrow<Verdict>> Answer<V> {
    /// The verdict as decided (before any refusal by the renderer).
    pub fn verdict(&self) -> &Verdict {
        self.verdict.borrow()
    }

    /// `allow` as sent.
    /// The reason rendering refused an allowed verdict with (it could not be sent whole).
    pub fn refused(&self) -> Option<Reason> {
        self.refused
    }

    pub fn allowed(&self) -> bool {
        self.refused.is_none() && self.verdict().allow
    }

    /// `reason` as sent.
    pub fn reason(&self) -> Reason {
        self.refused.unwrap_or(self.verdict().reason)
    }

    /// `status` as sent.
    pub fn status(&self) -> u16 {
        self.refused.map_or(self.verdict().status, Reason::status)
    }

    /// `description` as sent: the refusal's own when rendering refused an allowed verdict.
    pub fn description(&self) -> &str {
        match self.refused {
            Some(r) => r.description(),
            None => self.verdict().description(),
        }
    }

    /// The variables to set, in ACK order.
    pub fn actions(&self) -> Actions<'_> {
        let mut out = Actions {
            len: 0,
            items: [SetVar {
                scope: Scope::Txn,
                name: "",
                value: TypedValue::Bool(false),
            }; Var::ALL.len()],
        };
        for v in self.vars.iter() {
            if let Some(a) = self.action(v) {
                out.items[out.len] = a;
                out.len += 1;
            }
        }
        out
    }

    /// Variable `v` as a set-var action in transaction scope, if the verdict has a value for it
    /// (whether it is sent is what `vars` records).
    fn action(&self, v: Var) -> Option<SetVar<'_>> {
        let verdict = self.verdict();
        let id = verdict.identity.as_deref();
        let value = match v {
            Var::Allow => TypedValue::Bool(self.allowed()),
            Var::Status => TypedValue::Int64(i64::from(self.status())),
            Var::Reason => TypedValue::Str(self.reason().as_str()),
            Var::WwwAuthenticate => TypedValue::Str(
                self.challenge
                    .as_deref()
                    .or(verdict.www_authenticate.as_deref())?,
            ),
            Var::UpstreamAuthorization => {
                TypedValue::Str(verdict.upstream_authorization.as_deref()?)
            }
            Var::UpstreamHost => TypedValue::Str(&verdict.upstream_route.as_deref()?.host),
            Var::UpstreamPath => TypedValue::Str(&verdict.upstream_route.as_deref()?.path),
            Var::Description => TypedValue::Str(self.description()),
            Var::Principal => TypedValue::Str(verdict.principal.as_deref()?),
            Var::Sub => TypedValue::Str(&id?.sub),
            Var::User => TypedValue::Str(id?.user.as_deref()?),
            Var::Issuer => TypedValue::Str(&id?.issuer),
            Var::Rule => TypedValue::Str(verdict.rule.as_deref()?),
            Var::Email => TypedValue::Str(id?.email.as_deref()?),
            Var::Groups => TypedValue::Str(self.groups.as_deref()?),
        };
        Some(SetVar {
            scope: Scope::Txn,
            name: v.name(),
            value,
        })
    }

    fn len(&self, v: Var) -> usize {
        self.action(v).map_or(0, |a| a.encoded_len())
    }

    /// Choose the variables, without the size limit. `Err(UpstreamUnavailable)` if the upstream
    /// credential of an allowed verdict cannot be sent, `Err(InternalError)` if its identity
    /// cannot be sent whole (not header-safe, over a cap, a group left out).
    fn select(&mut self) -> Result<(), Reason> {
        let allowed = self.allowed();
        let status = self.status();
        let v: &Verdict = self.verdict.borrow();
        let mut vars = VarSet::default();
        vars.insert(Var::Allow);
        vars.insert(Var::Status);
        vars.insert(Var::Reason);
        if status == 401 {
            if let Some(c) = &v.www_authenticate {
                if let Cow::Owned(clean) = stripped(c, CHALLENGE_CAP) {
                    self.challenge = Some(clean);
                }
                vars.insert(Var::WwwAuthenticate);
            }
        }
        // An identity value: sent if it can be, else left out of a refusal and fatal to an
        // allowed answer.
        let identity = |var: Var, s: &str, vars: &mut VarSet| {
            if identity_ok(s) {
                vars.insert(var);
                Ok(())
            } else if allowed {
                Err(Reason::InternalError)
            } else {
                Ok(())
            }
        };
        if allowed {
            if let Some(ua) = &v.upstream_authorization {
                if !upstream_ok(ua) {
                    return Err(Reason::UpstreamUnavailable);
                }
                vars.insert(Var::UpstreamAuthorization);
            }
            if let Some(r) = &v.upstream_route {
                // Never another host without the credential for it, nor a half route.
                if v.upstream_authorization.is_none()
                    || !route_host_ok(&r.host)
                    || !route_path_ok(&r.path)
                {
                    return Err(Reason::UpstreamUnavailable);
                }
                vars.insert(Var::UpstreamHost);
                vars.insert(Var::UpstreamPath);
            }
            if let Some(p) = &v.principal {
                identity(Var::Principal, p, &mut vars)?;
            }
        }
        if let Some(id) = &v.identity {
            identity(Var::Sub, &id.sub, &mut vars)?;
            if let Some(u) = &id.user {
                identity(Var::User, u, &mut vars)?;
            }
            identity(Var::Issuer, &id.issuer, &mut vars)?;
            if let Some(e) = &id.email {
                identity(Var::Email, e, &mut vars)?;
            }
            let (groups, complete) = groups_value(&id.groups);
            if allowed && !complete {
                return Err(Reason::InternalError);
            }
            if groups.is_some() {
                vars.insert(Var::Groups);
            }
            self.groups = groups;
        }
        if v.rule.as_deref().is_some_and(identity_ok) {
            vars.insert(Var::Rule);
        }
        if !allowed && header_safe(self.description()) && self.description().len() <= CHALLENGE_CAP
        {
            vars.insert(Var::Description);
        }
        self.vars = vars;
        Ok(())
    }

    /// Answer with `reason` instead of the allowed verdict (identity and rule kept, for the
    /// logs).
    fn refuse(&mut self, reason: Reason) {
        self.refused = Some(reason);
        self.groups = None;
        self.challenge = None;
        // A refusal always has its variables.
        let _ = self.select();
    }

    /// Drop or refuse until the actions take at most `room` bytes (module docs).
    fn fit(&mut self, room: usize) {
        let mut total: usize = self.vars.iter().map(|v| self.len(v)).sum();
        while total > room {
            let allowed = self.allowed();
            if let Some(v) = Var::ALL
                .into_iter()
                .rev()
                .find(|&v| self.vars.contains(v) && is_optional(v, allowed))
            {
                total -= self.len(v);
                self.vars.remove(v);
                continue;
            }
            if !allowed {
                // allow/status/reason take < 100 bytes and max-frame-size is at least 256.
                break;
            }
            let credential: usize = ALWAYS
                .into_iter()
                .filter(|&v| self.vars.contains(v))
                .map(|v| self.len(v))
                .sum();
            let reason = if credential <= room {
                Reason::InternalError
            } else {
                Reason::UpstreamUnavailable
            };
            tracing::warn!(
                room,
                "the variables of an allowed request do not fit the negotiated max-frame-size; refusing the request ({reason})"
            );
            self.refuse(reason);
            total = self.vars.iter().map(|v| self.len(v)).sum();
        }
    }
}

#[cfg(test)]
mod tests;
