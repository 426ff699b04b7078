use std::sync::Arc;

use bytes::BytesMut;

use super::*;
use crate::decision::{Identity, Rejection};
use crate::spop::frame::{decode_actions, MAX_ACK_HEADER_LEN};
use crate::spop::{Action, TypedData};

fn identity() -> Arc<Identity> {
    Arc::new(Identity {
        issuer: "corp".into(),
        sub: "alice".into(),
        user: None,
        email: Some("alice@example.com".into()),
        groups: vec!["eng".into(), "ml".into()],
        scopes: vec![],
        expires_at: 0,
        issued_at: None,
        jti: None,
        claims: Default::default(),
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

/// The variables `render` sends for `v`, as (name, value) pairs in ACK order.
fn vars(v: &Verdict, mfs: u32) -> Vec<(&'static str, TypedData)> {
    let a = render(v, mfs);
    let out: Vec<_> = a
        .actions()
        .iter()
        .map(|s| (Var::from_name(s.name).unwrap().name(), s.value.to_typed()))
        .collect();
    // The accessors say what the variables say.
    assert_eq!(value(&out, "allow"), Some(&TypedData::Bool(a.allowed())));
    assert_eq!(
        value(&out, "status"),
        Some(&TypedData::Int64(a.status().into()))
    );
    assert_eq!(value(&out, "reason"), Some(&st(a.reason().as_str())));
    out
}

fn names(a: &[(&'static str, TypedData)]) -> Vec<&'static str> {
    a.iter().map(|(n, _)| *n).collect()
}

fn value<'a>(a: &'a [(&'static str, TypedData)], n: &str) -> Option<&'a TypedData> {
    a.iter().find(|(name, _)| *name == n).map(|(_, v)| v)
}

fn st(v: &str) -> TypedData {
    TypedData::String(v.to_owned().into())
}

/// Bytes the ACK of `v` needs, with the worst-case header the renderer reserves.
fn need(v: &Verdict) -> usize {
    let a = render(v, 1 << 20);
    MAX_ACK_HEADER_LEN + a.actions().iter().map(|s| s.encoded_len()).sum::<usize>()
}

fn status_reason<'a>(
    a: &'a [(&'static str, TypedData)],
) -> (Option<&'a TypedData>, Option<&'a TypedData>) {
    (value(a, "status"), value(a, "reason"))
}

#[test]
fn allowed_verdict_sets_everything_most_important_first() {
    let v = allowed();
    let a = vars(&v, 16380);
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
    assert_eq!(value(&a, "reason"), Some(&st("ok")));
    assert_eq!(value(&a, "groups"), Some(&st("eng,ml")));
    assert_eq!(
        value(&a, "upstream_authorization"),
        Some(&st("Bearer dapi123"))
    );
    // They encode into an ACK that decodes back to the same variables, txn scope.
    let answer = render(&v, 16380);
    let actions = answer.actions();
    let mut b = BytesMut::new();
    frame::encode_ack(&mut b, 1, 1, &actions);
    assert_eq!(b.len(), 4 + frame::ack_len(1, 1, &actions));
    let expected: Vec<Action> = actions.iter().map(SetVar::to_action).collect();
    assert_eq!(decode_actions(b.freeze().slice(11..)).unwrap(), expected);
    assert!(expected.iter().all(|x| matches!(
        x,
        Action::SetVar {
            scope: Scope::Txn,
            ..
        }
    )));
    // Borrowed from the verdict, not copied.
    let sub = actions.iter().find(|s| s.name == "sub").unwrap();
    let TypedValue::Str(s) = sub.value else {
        panic!()
    };
    assert_eq!(s.as_ptr(), v.identity.as_ref().unwrap().sub.as_ptr());
}

#[test]
fn denied_verdicts_set_only_what_the_contract_says() {
    let v = Verdict::unauthorized("idgate", &Rejection::new(Reason::MissingToken, "no token"));
    let a = vars(&v, 16380);
    assert_eq!(
        names(&a),
        [
            "allow",
            "status",
            "reason",
            "www_authenticate",
            "description"
        ]
    );
    assert_eq!(value(&a, "description"), Some(&st("no token")));
    assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(false)));
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
    let a = vars(&v, 16380);
    assert_eq!(
        names(&a),
        [
            "allow",
            "status",
            "reason",
            "sub",
            "issuer",
            "rule",
            "email",
            "groups",
            "description"
        ]
    );
    assert_eq!(
        value(&a, "description"),
        Some(&st(Reason::DeniedByRule.description()))
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
    let a = vars(&v, 16380);
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
    let Some(TypedData::String(c)) = value(&a, "www_authenticate") else {
        panic!()
    };
    assert!(!c.iter().any(|b| b.is_ascii_control()));
    assert!(std::str::from_utf8(c).unwrap().contains("tokenexpired"));
    for (_, v) in &a {
        if let TypedData::String(s) = v {
            assert!(header_safe(std::str::from_utf8(s).unwrap()));
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
    let (Some(g), false) = groups_value(&groups) else {
        panic!()
    };
    assert!(g.len() <= GROUPS_CAP);
    assert!(g
        .split(',')
        .all(|x| x.len() == 10 && x.starts_with("group-")));
    assert_eq!(groups_value(&[]), (None, true));
    let (_, complete) = groups_value(&["a".into(), "b,c".into()]);
    assert!(!complete);
    let (Some(g), true) = groups_value(&["a".into(), "b".into()]) else {
        panic!()
    };
    assert_eq!(g, "a,b");
}

/// An allowed verdict is never sent without the identity it is forwarded with: a value the
/// renderer cannot send whole refuses the request (500 internal_error) instead of leaving the
/// variable out.
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
        let a = vars(&v, 16380);
        assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(false)), "{case}");
        assert_eq!(
            status_reason(&a),
            (Some(&TypedData::Int64(500)), Some(&st("internal_error"))),
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
        let a = vars(&denied, 16380);
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
    let a = vars(&v, 16380);
    assert_eq!(value(&a, "status"), Some(&TypedData::Int64(200)));
    let Some(TypedData::String(g)) = value(&a, "groups") else {
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
    let full = vars(&v, 16380);
    assert_eq!(names(&full).len(), 9);
    let need = need(&v);
    assert!(need > 256, "{need}");
    // Room for everything but `rule`: rule is dropped, the rest stays.
    let rule_len = SetVar {
        scope: Scope::Txn,
        name: "rule",
        value: TypedValue::Str("serving"),
    }
    .encoded_len();
    let a = vars(&v, (need - rule_len) as u32);
    assert_eq!(value(&a, "status"), Some(&TypedData::Int64(200)));
    assert!(value(&a, "rule").is_none());
    for n in ["principal", "sub", "issuer", "email", "groups"] {
        assert!(value(&a, n).is_some(), "{n} dropped");
    }
    // One byte less: refused, and the refusal fits.
    let mfs = (need - rule_len - 1) as u32;
    let a = render(&v, mfs);
    assert!(!a.allowed());
    assert_eq!((a.status(), a.reason()), (500, Reason::InternalError));
    assert!(frame::ack_len(u64::MAX, u64::MAX, &a.actions()) <= mfs as usize);
    let a = render(&v, 256);
    assert_eq!(a.reason(), Reason::InternalError);
    assert!(frame::ack_len(u64::MAX, u64::MAX, &a.actions()) <= 256);
    // A refusal may still drop its optional variables to fit.
    let denied = Verdict {
        allow: false,
        status: 403,
        reason: Reason::DeniedByRule,
        principal: None,
        ..v.clone()
    };
    let a = vars(&denied, 256);
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
        let a = vars(&v, 16380);
        assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(false)), "{bad:?}");
        assert_eq!(value(&a, "status"), Some(&TypedData::Int64(503)));
        assert_eq!(value(&a, "reason"), Some(&st("upstream_unavailable")));
        assert!(value(&a, "upstream_authorization").is_none());
        assert!(value(&a, "principal").is_none());
        assert_eq!(value(&a, "sub"), Some(&st("alice")));
        // The decision itself is kept, for the logs.
        assert!(render(&v, 16380).verdict().allow);
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
        let a = render(&v, mfs);
        let actions = a.actions();
        // Whatever the ids.
        assert!(
            frame::ack_len(u64::MAX, u64::MAX, &actions) <= mfs as usize,
            "{mfs}"
        );
        let names: Vec<_> = actions.iter().map(|s| s.name).collect();
        assert_eq!(&names[..3], ["allow", "status", "reason"]);
        // Too small for the identity: refused, never allowed without it.
        let want = if mfs == 16380 { 200 } else { 500 };
        assert_eq!(a.status(), want, "{mfs}");
    }
    // At 16380 everything fits.
    assert_eq!(render(&v, 16380).actions().len(), 9);
    // A credential that cannot fit turns the verdict into a 503 that does.
    let v = Verdict {
        upstream_authorization: Some(format!("Bearer {}", "t".repeat(300)).into()),
        ..allowed()
    };
    let a = render(&v, 256);
    assert_eq!((a.status(), a.reason()), (503, Reason::UpstreamUnavailable));
    assert!(frame::ack_len(u64::MAX, u64::MAX, &a.actions()) <= 256);
    let a = render(&v, 1024);
    assert_eq!(a.status(), 200);
    assert!(a
        .actions()
        .iter()
        .any(|s| s.name == "upstream_authorization"));
}

/// The variables depend on the verdict and the frame size only: an ACK that fits for the
/// smallest ids fits for the largest too (explain cannot know the ids).
#[test]
fn fitting_does_not_depend_on_the_ids() {
    let v = allowed();
    let need = need(&v) as u32;
    let a = render(&v, need);
    assert!(a.allowed());
    assert!(frame::ack_len(u64::MAX, u64::MAX, &a.actions()) <= need as usize);
    // One byte less: `rule`, the one optional variable of an allowed answer, goes.
    let a = render(&v, need - 1);
    assert!(a.allowed());
    assert!(!a.actions().iter().any(|s| s.name == "rule"));
}

#[test]
fn a_data_plane_route_is_sent_whole_with_its_credential_or_refused() {
    let route = |host: &str, path: &str| {
        Some(Arc::new(crate::decision::Route {
            host: host.into(),
            path: path.into(),
        }))
    };
    let v = Verdict {
        upstream_route: route(
            "abc.serving.cloud.databricks.com:8443",
            "/123/serving-endpoints/churn/invocations",
        ),
        ..allowed()
    };
    let a = vars(&v, 16380);
    assert_eq!(
        names(&a)[..6],
        [
            "allow",
            "status",
            "reason",
            "upstream_authorization",
            "upstream_host",
            "upstream_path"
        ]
    );
    assert_eq!(
        value(&a, "upstream_host"),
        Some(&st("abc.serving.cloud.databricks.com:8443"))
    );
    // Never another host without the credential for it, nor a host or path that is not
    // a plain host name or an absolute path.
    for bad in [
        Verdict {
            upstream_authorization: None,
            ..v.clone()
        },
        Verdict {
            upstream_route: route("evil.example.com\r\nX: 1", "/x"),
            ..v.clone()
        },
        Verdict {
            upstream_route: route("abc.example.com", "relative"),
            ..v.clone()
        },
        Verdict {
            upstream_route: route("abc.example.com", "/x?y=1"),
            ..v.clone()
        },
    ] {
        let a = vars(&bad, 16380);
        assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(false)));
        assert_eq!(value(&a, "reason"), Some(&st("upstream_unavailable")));
        assert_eq!(value(&a, "upstream_host"), None);
        assert_eq!(value(&a, "upstream_authorization"), None);
    }
    // A frame too small for the route refuses rather than sending the request to the
    // workspace with a data-plane token.
    let long = Verdict {
        upstream_route: route(
            "abc.serving.cloud.databricks.com",
            &format!("/{}", "p".repeat(600)),
        ),
        ..v
    };
    let a = vars(&long, 256);
    assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(false)));
}

#[test]
fn a_refused_upstream_says_why() {
    let v = Verdict {
        status: 403,
        description: Some("Databricks refused a credential for this caller".into()),
        ..Verdict::deny(Reason::UpstreamRefused)
    };
    let a = vars(&v, 16380);
    assert_eq!(value(&a, "status"), Some(&TypedData::Int64(403)));
    assert_eq!(value(&a, "reason"), Some(&st("upstream_refused")));
    assert_eq!(
        value(&a, "description"),
        Some(&st("Databricks refused a credential for this caller"))
    );
}

#[test]
fn user_is_sent_only_when_the_issuer_names_a_user_claim() {
    let a = vars(&allowed(), 16380);
    assert_eq!(value(&a, "user"), None, "sub alone identifies the caller");
    let mut id = (*identity()).clone();
    id.user = Some("6e8f0c3a-54b1-4c9e-9a51-2f0d8b7c1e44".into());
    let v = Verdict {
        identity: Some(Arc::new(id.clone())),
        ..allowed()
    };
    let a = vars(&v, 16380);
    assert_eq!(
        value(&a, "user"),
        Some(&st("6e8f0c3a-54b1-4c9e-9a51-2f0d8b7c1e44"))
    );
    assert_eq!(value(&a, "sub"), Some(&st("alice")));
    // Never altered: a user value that cannot be sent refuses the allowed request.
    id.user = Some("bob\r\nX-Evil: 1".into());
    let v = Verdict {
        identity: Some(Arc::new(id)),
        ..allowed()
    };
    let a = vars(&v, 16380);
    assert_eq!(value(&a, "allow"), Some(&TypedData::Bool(false)));
    assert_eq!(value(&a, "user"), None);
}
