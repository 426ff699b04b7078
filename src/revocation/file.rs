//! The single-node store: `[shared] revocations_file`, one JSON entry per line.
//!
//! `idgate revoke` rewrites it atomically (a temporary file in the same directory, then a
//! rename), dropping expired entries; the agent checks the file's identity (modification time,
//! length, inode) every [`POLL`] and reloads it when it changed. The file is authoritative: an
//! entry removed from it is lifted. Who can write the file (and its directory) can revoke: keep
//! both owned by the agent's user, not writable by others (`idgate check-config` warns).

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Entry, Revocations, Source};

/// How often the agent looks at the file: a revocation applies within this time.
pub const POLL: Duration = Duration::from_millis(250);

/// The entries in the file (an absent file holds none). A line that is no entry is an error:
/// a revocation must not be dropped silently.
pub fn read(path: &Path) -> Result<Vec<Entry>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Entry::from_json(l).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Add `entry` to the file (creating it, mode 0640), dropping expired entries.
pub fn add(path: &Path, entry: &Entry) -> Result<(), String> {
    let now = crate::auth::unix_now();
    let mut entries = read(path)?;
    entries.retain(|e| e.live(now));
    entries.push(entry.clone());
    let dir = path.parent().unwrap_or(Path::new("/"));
    let mut tmp = tempfile_in(dir)?;
    for e in &entries {
        writeln!(tmp.1, "{}", e.to_json()).map_err(|e| format!("{}: {e}", tmp.0.display()))?;
    }
    tmp.1
        .sync_all()
        .map_err(|e| format!("{}: {e}", tmp.0.display()))?;
    std::fs::rename(&tmp.0, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp.0);
        format!("{}: {e}", path.display())
    })
}

/// A new file beside the target, mode 0640.
fn tempfile_in(dir: &Path) -> Result<(PathBuf, std::fs::File), String> {
    use std::os::unix::fs::OpenOptionsExt;
    for _ in 0..16 {
        let name = dir.join(format!(
            ".idgate-revocations.{}.{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&name)
        {
            Ok(f) => return Ok((name, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        }
    }
    Err(format!("{}: cannot create a temporary file", dir.display()))
}

/// Why the file or its directory lets other users revoke, if it does (check-config warns).
pub fn writable_by_others(path: &Path) -> Option<String> {
    let dir = path.parent()?;
    for p in [path, dir] {
        if let Ok(m) = std::fs::metadata(p) {
            if m.permissions().mode() & 0o002 != 0 {
                return Some(format!(
                    "{} is writable by every user: anyone can revoke (and lift revocations)",
                    p.display()
                ));
            }
        }
    }
    None
}

/// What identifies one version of the file.
fn stamp(path: &Path) -> Option<(i64, i64, u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
}

/// Load `path` into `revocations`; on an error keep what is in force (an unreadable file
/// must not lift anything) and say so.
fn load(path: &Path, revocations: &Revocations) {
    match read(path) {
        Ok(entries) => {
            revocations.replace(entries, Source::File);
            revocations.set_store_problem(None);
        }
        Err(e) => {
            tracing::error!("revocations file unreadable, keeping the revocations in force: {e}");
            revocations.set_store_problem(Some(format!("revocations file unreadable: {e}")));
        }
    }
}

/// Load the file now (the agent starts with its entries), then reload it whenever it changes.
pub(super) fn spawn_follower(path: PathBuf, revocations: Arc<Revocations>) {
    let mut last = stamp(&path);
    load(&path, &revocations);
    tokio::spawn(async move {
        let mut ticks = 0u32;
        loop {
            tokio::time::sleep(POLL).await;
            ticks = ticks.wrapping_add(1);
            let now = stamp(&path);
            if now != last {
                last = now;
                load(&path, &revocations);
            } else if ticks % 40 == 0 {
                revocations.prune();
            }
        }
    });
}
