//! Files named by the configuration (`client_secret_file`, `token_file`, any `*_file` key):
//! where a name is looked up, decided once, at load.
//!
//! An **absolute** path is used as written. A **relative** name is looked up in
//! `$CREDENTIALS_DIRECTORY` first (systemd `LoadCredential=`: `client_secret_file =
//! "serving-sp.secret"` matches `LoadCredential=serving-sp.secret:/etc/idgate/serving-sp.secret`),
//! then in the directory of the configuration file, never in the current directory (which
//! depends on how the agent was started). A name found in neither place is a configuration
//! problem naming every place tried.

use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The environment variable systemd sets for a unit with `LoadCredential=`/`SetCredential=`.
pub const CREDENTIALS_DIRECTORY_ENV: &str = "CREDENTIALS_DIRECTORY";

/// Where relative file names are looked up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileDirs {
    /// `$CREDENTIALS_DIRECTORY`, if set and non-empty.
    pub(crate) credentials: Option<PathBuf>,
    /// The directory of the configuration file (none for a configuration given as text).
    pub(crate) config: Option<PathBuf>,
}

impl FileDirs {
    /// `$CREDENTIALS_DIRECTORY` from the environment, and `config_dir`.
    pub(crate) fn from_env(config_dir: Option<&Path>) -> FileDirs {
        FileDirs {
            credentials: std::env::var_os(CREDENTIALS_DIRECTORY_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            config: config_dir.map(Path::to_path_buf),
        }
    }

    /// Resolve a configured name (see the module docs); the error names every place tried.
    pub(crate) fn resolve(&self, name: &Path) -> Result<PathBuf, String> {
        if name.as_os_str().is_empty() {
            return Err("must name a file".into());
        }
        if name.is_absolute() {
            return match found(name) {
                Ok(true) => Ok(name.to_path_buf()),
                Ok(false) => Err(format!("{name:?} not found")),
                Err(e) => Err(format!("{name:?}: {e}")),
            };
        }
        let candidates = [&self.credentials, &self.config];
        for dir in candidates.into_iter().flatten() {
            let path = dir.join(name);
            if let Ok(true) = found(&path) {
                return Ok(path);
            }
        }
        let mut places = Vec::new();
        if let Some(c) = &self.credentials {
            places.push(format!("${CREDENTIALS_DIRECTORY_ENV}={}", c.display()));
        }
        if let Some(c) = &self.config {
            places.push(c.display().to_string());
        }
        let mut why = format!("{name:?} not found");
        if places.is_empty() {
            why.push_str(" (a relative name is looked up in $CREDENTIALS_DIRECTORY, then next to the configuration file; there is neither: use an absolute path)");
        } else {
            let _ = write!(why, " (looked in {}", places.join(", "));
            if self.credentials.is_none() {
                let _ = write!(why, "; ${CREDENTIALS_DIRECTORY_ENV} is not set");
            }
            why.push(')');
        }
        Err(why)
    }
}

/// Whether `path` names something other than a directory.
fn found(path: &Path) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(std::io::Error::other("is a directory, not a file")),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// A file named by the configuration: the name as written and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    name: PathBuf,
    path: PathBuf,
}

impl SecretFile {
    /// A name not resolved yet ([`SecretFile::resolve`] is part of loading).
    pub(crate) fn unresolved(name: PathBuf) -> SecretFile {
        SecretFile {
            path: name.clone(),
            name,
        }
    }

    pub(crate) fn resolve(&mut self, dirs: &FileDirs) -> Result<(), String> {
        self.path = dirs.resolve(&self.name)?;
        Ok(())
    }

    /// The name as configured.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// The file to read.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(credentials: Option<&Path>, config: Option<&Path>) -> FileDirs {
        FileDirs {
            credentials: credentials.map(Path::to_path_buf),
            config: config.map(Path::to_path_buf),
        }
    }

    #[test]
    fn relative_names_try_the_credentials_directory_then_the_config_directory() {
        let creds = tempfile::tempdir().unwrap();
        let conf = tempfile::tempdir().unwrap();
        std::fs::write(creds.path().join("both"), "c").unwrap();
        std::fs::write(conf.path().join("both"), "f").unwrap();
        std::fs::write(conf.path().join("conf-only"), "f").unwrap();
        let d = dirs(Some(creds.path()), Some(conf.path()));
        assert_eq!(
            d.resolve(Path::new("both")).unwrap(),
            creds.path().join("both")
        );
        assert_eq!(
            d.resolve(Path::new("conf-only")).unwrap(),
            conf.path().join("conf-only")
        );
        let e = d.resolve(Path::new("none.secret")).unwrap_err();
        assert_eq!(
            e,
            format!(
                "\"none.secret\" not found (looked in $CREDENTIALS_DIRECTORY={}, {})",
                creds.path().display(),
                conf.path().display()
            )
        );
    }

    #[test]
    fn never_the_current_directory() {
        // Cargo runs unit tests in the package root, where Cargo.toml exists.
        assert!(Path::new("Cargo.toml").exists());
        let e = FileDirs::default()
            .resolve(Path::new("Cargo.toml"))
            .unwrap_err();
        assert!(e.contains("use an absolute path"), "{e}");
        let conf = tempfile::tempdir().unwrap();
        let e = dirs(None, Some(conf.path()))
            .resolve(Path::new("Cargo.toml"))
            .unwrap_err();
        assert!(e.ends_with("; $CREDENTIALS_DIRECTORY is not set)"), "{e}");
    }

    #[test]
    fn absolute_paths_are_used_as_written() {
        let creds = tempfile::tempdir().unwrap();
        let file = creds.path().join("abs");
        std::fs::write(&file, "x").unwrap();
        let other = tempfile::tempdir().unwrap();
        let d = dirs(Some(other.path()), Some(other.path()));
        assert_eq!(d.resolve(&file).unwrap(), file);
        let missing = creds.path().join("missing");
        assert_eq!(
            d.resolve(&missing).unwrap_err(),
            format!("{missing:?} not found")
        );
        assert!(d
            .resolve(creds.path())
            .unwrap_err()
            .contains("is a directory"));
        assert_eq!(d.resolve(Path::new("")).unwrap_err(), "must name a file");
    }
}
