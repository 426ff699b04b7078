use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;

const NOW: u64 = 1_800_000_000;

fn config() -> Config {
    Config::from_toml(
        "[[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\n\
         jwks_uri = \"https://idp.example.com/jwks\"\naudiences = [\"gw\"]\n\
         max_token_lifetime = \"1h\"\nleeway = \"30s\"\n",
        "t",
    )
    .unwrap()
}

fn id(sub: &str, jti: Option<&str>, iat: Option<u64>) -> Identity {
    Identity {
        issuer: Arc::from("corp"),
        sub: sub.into(),
        user: None,
        email: None,
        groups: Vec::new(),
        scopes: Vec::new(),
        expires_at: NOW + 600,
        issued_at: iat,
        jti: jti.map(Box::from),
        claims: Default::default(),
    }
}

fn entry(target: Target, until: u64) -> Entry {
    Entry {
        issuer: "corp".into(),
        target,
        until,
        created: NOW,
    }
}

#[test]
fn default_expiry_covers_every_token_the_entry_targets() {
    let c = config();
    let bound = 3600 + 30;
    let e = Entry::new(
        &c,
        "corp",
        Target::Subject("alice".into()),
        Lasts::Default,
        NOW,
    )
    .unwrap();
    assert_eq!(e.until, NOW + bound);
    let e = Entry::new(&c, "corp", Target::Jti("j1".into()), Lasts::Default, NOW).unwrap();
    assert_eq!(e.until, NOW + bound);
    // Tokens issued before T are all expired T + lifetime + leeway later.
    let e = Entry::new(
        &c,
        "corp",
        Target::IssuedBefore(NOW - 100),
        Lasts::Default,
        NOW,
    )
    .unwrap();
    assert_eq!(e.until, NOW - 100 + bound);
    let e = Entry::new(
        &c,
        "corp",
        Target::Subject("alice".into()),
        Lasts::For(Duration::from_secs(7 * 86400)),
        NOW,
    )
    .unwrap();
    assert_eq!(e.until, NOW + 7 * 86400);
    // A token's own exp (tokens without iat can outlive the default), plus leeway.
    let e = Entry::new(
        &c,
        "corp",
        Target::Jti("j1".into()),
        Lasts::Until(NOW + 3 * 86400),
        NOW,
    )
    .unwrap();
    assert_eq!(e.until, NOW + 3 * 86400 + 30);
}

#[test]
fn refused_entries() {
    let c = config();
    let err = |r: Result<Entry, String>| r.unwrap_err();
    assert!(err(Entry::new(
        &c,
        "nope",
        Target::Jti("j".into()),
        Lasts::Default,
        NOW
    ))
    .contains("corp"));
    assert!(err(Entry::new(
        &c,
        "corp",
        Target::Subject(String::new()),
        Lasts::Default,
        NOW
    ))
    .contains("empty"));
    assert!(err(Entry::new(
        &c,
        "corp",
        Target::IssuedBefore(NOW + 3600),
        Lasts::Default,
        NOW
    ))
    .contains("future"));
    assert!(err(Entry::new(
        &c,
        "corp",
        Target::IssuedBefore(NOW - 7200),
        Lasts::Default,
        NOW
    ))
    .contains("nothing to revoke"));
    assert!(err(Entry::new(
        &c,
        "corp",
        Target::Jti("j".into()),
        Lasts::For(Duration::ZERO),
        NOW
    ))
    .contains("0s"));
    assert!(err(Entry::new(
        &c,
        "corp",
        Target::Jti("j".into()),
        Lasts::Until(NOW - 1),
        NOW
    ))
    .contains("past"));
}

#[test]
fn the_set_matches_subject_user_jti_and_issued_before() {
    let set = RevocationSet::build(&[
        entry(Target::Subject("alice".into()), NOW + 10),
        entry(Target::Jti("j-9".into()), NOW + 10),
    ]);
    assert!(set.check(&id("alice", None, Some(NOW)), NOW));
    assert!(
        !set.check(&id("alice", None, Some(NOW)), NOW + 10),
        "expired"
    );
    assert!(!set.check(&id("bob", None, Some(NOW)), NOW));
    assert!(set.check(&id("bob", Some("j-9"), Some(NOW)), NOW));
    assert!(!set.check(&id("bob", Some("j-8"), Some(NOW)), NOW));
    let mut by_user = id("pairwise-sub", None, None);
    by_user.user = Some("alice".into());
    assert!(
        set.check(&by_user, NOW),
        "the user_claim value counts as the subject"
    );
    let mut other_issuer = id("alice", None, None);
    other_issuer.issuer = Arc::from("other");
    assert!(!set.check(&other_issuer, NOW));

    let set = RevocationSet::build(&[entry(Target::IssuedBefore(NOW - 50), NOW + 10)]);
    assert!(set.check(&id("a", None, Some(NOW - 51)), NOW));
    assert!(!set.check(&id("a", None, Some(NOW - 50)), NOW));
    assert!(set.check(&id("a", None, None), NOW), "no iat: fail closed");
    assert!(!set.check(&id("a", None, None), NOW + 10));
}

#[test]
fn merge_keeps_replace_lifts_and_expired_entries_go() {
    let r = Revocations::default();
    let alice = id("alice", None, Some(NOW));
    let far = crate::auth::unix_now() + 3600;
    assert!(!r.is_revoked(&alice));
    r.merge(
        [entry(Target::Subject("alice".into()), far)],
        Source::Pubsub,
    );
    assert!(r.is_revoked(&alice));
    r.merge([], Source::Resync);
    assert!(r.is_revoked(&alice), "a merge never lifts");
    r.merge([entry(Target::Subject("bob".into()), 5)], Source::Pubsub);
    assert_eq!(r.entries().len(), 1, "an expired entry is never taken");
    r.replace([], Source::File);
    assert!(!r.is_revoked(&alice), "the file is authoritative");
}

#[test]
fn file_store_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("revocations");
    assert!(file::read(&path).unwrap().is_empty(), "absent file: none");
    let far = crate::auth::unix_now() + 3600;
    let a = entry(Target::Subject("alice".into()), far);
    let b = entry(Target::IssuedBefore(NOW), far);
    file::add(&path, &a).unwrap();
    file::add(&path, &entry(Target::Jti("old".into()), 5)).unwrap();
    file::add(&path, &b).unwrap();
    assert_eq!(
        file::read(&path).unwrap(),
        [a, b],
        "the expired entry was dropped"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode & 0o027,
        0,
        "not writable by the group, nothing for others: {mode:o}"
    );
    std::fs::write(&path, "{not json\n").unwrap();
    assert!(file::read(&path).unwrap_err().contains("line 1"));
}

#[test]
fn entry_json_is_stable() {
    let e = entry(Target::IssuedBefore(NOW), NOW + 1);
    assert_eq!(
        e.to_json(),
        format!(
            r#"{{"issuer":"corp","issued_before":{NOW},"until":{},"created":{NOW}}}"#,
            NOW + 1
        )
    );
    assert_eq!(Entry::from_json(&e.to_json()).unwrap(), e);
}
