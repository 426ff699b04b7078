//! `idgate revoke` and `idgate revocations` (contract §9; docs/fleet.md). Part of the binary.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use idgate::config::{Config, RevocationStore};
use idgate::revocation::{self, Entry, Lasts};

/// The one target given on the command line (clap makes them exclusive).
pub(crate) struct Target {
    pub subject: Option<String>,
    pub jti: Option<String>,
    pub issued_before: Option<String>,
}

fn store(config: &Path) -> Result<(Config, RevocationStore), String> {
    let cfg = Config::load(config).map_err(|e| e.to_string())?;
    let store = cfg.shared.revocation_store().ok_or_else(|| {
        format!(
            "{}: no revocation store: set [shared] redis_url (a fleet) or [shared] \
             revocations_file (one node)",
            config.display()
        )
    })?;
    Ok((cfg, store))
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// An RFC 3339 time in UTC as Unix seconds.
fn unix_time(flag: &str, t: &str) -> Result<u64, String> {
    let at = humantime::parse_rfc3339(t)
        .map_err(|e| format!("{flag} {t:?}: {e} (RFC 3339 in UTC, e.g. 2026-12-05T03:00:00Z)"))?;
    Ok(at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("{flag} {t:?}: before 1970"))?
        .as_secs())
}

fn target(t: Target) -> Result<revocation::Target, String> {
    Ok(match (t.subject, t.jti, t.issued_before) {
        (Some(s), None, None) => revocation::Target::Subject(s),
        (None, Some(j), None) => revocation::Target::Jti(j),
        (None, None, Some(t)) => {
            revocation::Target::IssuedBefore(unix_time("--issued-before", &t)?)
        }
        _ => return Err("give exactly one of --subject, --jti, --issued-before".into()),
    })
}

/// Run `f` to completion on a new runtime; the exit code when there can be none.
fn on_runtime<T>(f: impl std::future::Future<Output = T>) -> Result<T, ExitCode> {
    match super::runtime() {
        Ok(rt) => Ok(rt.block_on(f)),
        Err(e) => {
            eprintln!("idgate: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn describe(e: &Entry) -> String {
    let what = match &e.target {
        revocation::Target::Subject(s) => format!("subject {s:?}"),
        revocation::Target::Jti(j) => format!("jti {j:?}"),
        revocation::Target::IssuedBefore(t) => format!("issued before {}", rfc3339(*t)),
    };
    format!("issuer {:?} {what} until {}", e.issuer, rfc3339(e.until))
}

/// `idgate revoke`: exit 0 once the store has the entry, 1 when it could not be stored, 2 on a
/// usage or configuration error.
pub(crate) fn revoke(
    config: &Path,
    issuer: &str,
    t: Target,
    for_: Option<&str>,
    until: Option<&str>,
) -> ExitCode {
    super::command_logging();
    let made = (|| {
        let (cfg, store) = store(config)?;
        let lasts = match (for_, until) {
            (Some(d), _) => {
                Lasts::For(humantime::parse_duration(d).map_err(|e| format!("--for {d:?}: {e}"))?)
            }
            (None, Some(t)) => Lasts::Until(unix_time("--until", t)?),
            (None, None) => Lasts::Default,
        };
        let entry = Entry::new(&cfg, issuer, target(t)?, lasts, idgate::auth::unix_now())?;
        Ok::<_, String>((store, entry))
    })();
    let (store, entry) = match made {
        Ok(m) => m,
        Err(e) => {
            eprintln!("idgate: {e}");
            return ExitCode::from(2);
        }
    };
    let stored = match on_runtime(revocation::revoke(&store, &entry)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match stored {
        Ok(()) => {
            println!("revoked: {}", describe(&entry));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idgate: revocation not stored: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `idgate revocations`: the entries in force, one per line.
pub(crate) fn list(config: &Path, json: bool) -> ExitCode {
    super::command_logging();
    let store = match store(config) {
        Ok((_, s)) => s,
        Err(e) => {
            eprintln!("idgate: {e}");
            return ExitCode::from(2);
        }
    };
    let listed = match on_runtime(revocation::list(&store)) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match listed {
        Ok(entries) => {
            for e in &entries {
                if json {
                    println!("{}", e.to_json());
                } else {
                    println!("{}", describe(e));
                }
            }
            if entries.is_empty() && !json {
                eprintln!("no revocation in force");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idgate: cannot read the revocations: {e}");
            ExitCode::FAILURE
        }
    }
}
