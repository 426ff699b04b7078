//! The SPOP listener on a Unix socket (module docs of [`super`], "Unix socket").

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixSocket};
use tracing::{info, warn};

use crate::config::SocketPerms;

/// A listening Unix socket that owns its file: dropping it removes the file, unless the file
/// at the path is no longer the one we bound (another agent replaced it meanwhile).
#[derive(Debug)]
pub struct UnixSocketListener {
    pub(super) listener: UnixListener,
    pub(super) path: PathBuf,
    /// (device, inode) of the socket file we created.
    file_id: (u64, u64),
}

impl UnixSocketListener {
    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocketListener {
    fn drop(&mut self) {
        remove_if_ours(&self.path, self.file_id);
    }
}

fn remove_if_ours(path: &Path, file_id: (u64, u64)) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == file_id => {
            if let Err(e) = std::fs::remove_file(path) {
                warn!(path = %path.display(), "cannot remove the SPOP socket file: {e}");
            }
        }
        _ => {}
    }
}

/// Bind a Unix socket at `path` with `perms` (module docs: no moment at which it accepts
/// connections with other permissions). A stale socket at `path` is replaced; a live one, or
/// anything that is not a socket, is an error. Must run inside a tokio runtime.
///
/// # Errors
/// The parent directory is missing, the path holds something else, or bind, chown, chmod or
/// listen fail.
pub(super) fn bind_unix(
    path: &Path,
    backlog: u32,
    perms: SocketPerms,
) -> io::Result<UnixSocketListener> {
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "the socket's directory {} does not exist (create it first; under systemd \
                     RuntimeDirectory= does)",
                    dir.display()
                ),
            ))
        }
        Err(e) => return Err(ctx(&format!("cannot use directory {}", dir.display()), e)),
    }
    remove_stale_socket(path)?;
    let socket = UnixSocket::new_stream()?;
    socket
        .bind(path)
        .map_err(|e| ctx(&format!("cannot bind {}", path.display()), e))?;
    // From here on the file is ours: remove it again if anything below fails.
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| ctx(&format!("cannot stat {}", path.display()), e))?;
    let file_id = (meta.dev(), meta.ino());
    let cleanup = RemoveOnError {
        path,
        file_id,
        armed: true,
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::other(format!(
            "{} was replaced while binding",
            path.display()
        )));
    }
    if perms.uid.is_some() || perms.gid.is_some() {
        // lchown: never follow a symlink someone put at the path.
        std::os::unix::fs::lchown(path, perms.uid, perms.gid).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (a non-root process can only give its files to a group it is a member of)"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!(
                    "cannot set the owner/group of {} (spop.socket_owner {:?}, spop.socket_group {:?}): {e}{hint}",
                    path.display(),
                    perms.uid,
                    perms.gid
                ),
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(perms.mode.0)).map_err(|e| {
        ctx(
            &format!("cannot set mode {} on {}", perms.mode, path.display()),
            e,
        )
    })?;
    let listener = socket
        .listen(backlog)
        .map_err(|e| ctx(&format!("cannot listen on {}", path.display()), e))?;
    let mut cleanup = cleanup;
    cleanup.armed = false;
    Ok(UnixSocketListener {
        listener,
        path: path.to_path_buf(),
        file_id,
    })
}

struct RemoveOnError<'a> {
    path: &'a Path,
    file_id: (u64, u64),
    armed: bool,
}

impl Drop for RemoveOnError<'_> {
    fn drop(&mut self) {
        if self.armed {
            remove_if_ours(self.path, self.file_id);
        }
    }
}

/// Make room for a new socket at `path`: nothing there is fine; a socket nobody accepts on
/// (left by a crash or a SIGKILL) is removed; a socket something still accepts on, and
/// anything that is not a socket (a regular file, a directory, a symlink), is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot stat {}: {e}", path.display()),
            ))
        }
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        let what = if ft.is_file() {
            "a regular file"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_symlink() {
            "a symbolic link"
        } else {
            "not a socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is {what}; refusing to replace it with the SPOP socket",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is in use: another process accepts connections on it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    info!(path = %path.display(), "removed a stale SPOP socket file");
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove the stale socket {}: {e}", path.display()),
                )),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} exists and cannot be probed ({e}); remove it if no agent uses it",
                path.display()
            ),
        )),
    }
}
