//! Secrets read from files: client secrets and static bearer tokens.
//!
//! Secrets never appear inline in the TOML (a config file gets copied, diffed, pasted into
//! tickets); they live in files the operator protects, or in systemd credentials
//! (`LoadCredential=`), which systemd exposes under `$CREDENTIALS_DIRECTORY`.
//!
//! Where a configured name is found is decided when the configuration is loaded
//! ([`crate::config::SecretFile`]: `$CREDENTIALS_DIRECTORY`, then the configuration file's
//! directory); this module reads the file found, each time the upstreams are built (start and
//! every reload).

use std::fmt;
use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

/// Largest secret file we read. OAuth client secrets are ~40 bytes, PATs ~40, JWTs a few KB;
/// anything bigger is the wrong file (a key bundle, a log) and must not be sent as a header.
pub(super) const MAX_SECRET_BYTES: usize = 8192;

/// A secret string: zeroed when dropped, redacted in `Debug`, no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(Zeroizing<String>);

impl Secret {
    pub(crate) fn new(s: String) -> Secret {
        Secret(Zeroizing::new(s))
    }

    /// The secret itself. Call sites are few and greppable on purpose.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Read a secret file: surrounding whitespace (the usual trailing newline) is trimmed; what
/// remains must be one non-empty line of visible ASCII (0x21..=0x7E), at most
/// [`MAX_SECRET_BYTES`]. The error message names the path and the problem, never
/// the content.
pub(crate) fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    warn_if_world_readable(&file, path);
    // Read at most one byte more than allowed, so an oversized file is detected without
    // loading all of it.
    let mut raw = Zeroizing::new(Vec::with_capacity(256));
    file.take(MAX_SECRET_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if raw.len() > MAX_SECRET_BYTES {
        return Err(format!(
            "{shown} is larger than {MAX_SECRET_BYTES} bytes; not a secret file"
        ));
    }
    let trimmed = raw.trim_ascii();
    if trimmed.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    if let Some(b) = trimmed.iter().find(|b| !b.is_ascii_graphic()) {
        let what = match b {
            b'\n' | b'\r' => "more than one line",
            b' ' | b'\t' => "whitespace inside the value",
            _ => "a byte that is not visible ASCII",
        };
        return Err(format!(
            "{shown} contains {what}; it must hold exactly one secret of visible ASCII characters"
        ));
    }
    // Checked above: visible ASCII is valid UTF-8.
    let s = String::from_utf8(trimmed.to_vec()).map_err(|_| format!("{shown} is not ASCII"))?;
    Ok(Secret::new(s))
}

#[cfg(unix)]
pub(super) fn warn_if_world_readable(file: &std::fs::File, path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = file.metadata() {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(
                file = %path.display(),
                "secret file is world-readable; restrict it (chmod 0600 or 0640)"
            );
        }
    }
}

#[cfg(not(unix))]
pub(super) fn warn_if_world_readable(_file: &std::fs::File, _path: &Path) {}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn trims_and_redacts() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "s", b"  dose1234abcd\n");
        let s = read_secret_file(&p).unwrap();
        assert_eq!(s.expose(), "dose1234abcd");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn rejects_bad_content_without_echoing_it() {
        let d = tempfile::tempdir().unwrap();
        for (content, why) in [
            (&b""[..], "empty"),
            (b" \n\t", "empty"),
            (b"abc\ndef", "more than one line"),
            (b"abc def", "whitespace"),
            (b"abc\x01", "not visible ASCII"),
            ("caf\u{e9}".as_bytes(), "not visible ASCII"),
        ] {
            let p = write(d.path(), "s", content);
            let e = read_secret_file(&p).unwrap_err();
            assert!(e.contains(why), "{e}");
            assert!(!e.contains("abc"), "secret echoed: {e}");
        }
        let p = write(d.path(), "big", &vec![b'a'; MAX_SECRET_BYTES + 1]);
        assert!(read_secret_file(&p).unwrap_err().contains("larger"));
        let p = write(d.path(), "max", &vec![b'a'; MAX_SECRET_BYTES]);
        assert_eq!(
            read_secret_file(&p).unwrap().expose().len(),
            MAX_SECRET_BYTES
        );
        let e = read_secret_file(&d.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
