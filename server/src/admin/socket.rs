//! The admin socket: an I/O driver, like the listener. It carries [`AdminRequest`]s to
//! [`Admin::handle`] over a Unix socket in the data directory and their [`AdminResponse`]s back, one
//! JSON value per line, and is the only part of administration that touches tokio: the requests
//! are carried out on tokio's blocking pool, never on the runtime. [`request`] is its client side,
//! for the `polyphony-server` command.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Admin, AdminError, AdminRequest, AdminResponse};

/// The longest request line the admin socket accepts, in bytes. Requests are a few hundred bytes;
/// the bound keeps a confused client from making the server buffer without end.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Serve administration on the Unix socket at `path` until `shutdown` is set: [`AdminSocket::bind`]
/// then [`AdminSocket::serve`].
///
/// A caller that must know the socket is ready before it goes on (a server's `start` that returns
/// to a caller who may send admin requests at once) should bind first and spawn only the serving.
pub async fn serve_admin(
    path: impl AsRef<Path>,
    admin: Arc<Admin>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    AdminSocket::bind(path).await?.serve(admin, shutdown).await
}

/// The admin socket, bound and ready: a client that connects from now on is queued until
/// [`AdminSocket::serve`] answers it. Dropping it removes the socket file.
#[derive(Debug)]
pub struct AdminSocket {
    listener: UnixListener,
    /// The uid that owns the socket file: the server's own.
    owner: u32,
    path: RemoveOnDrop,
}

impl AdminSocket {
    /// Bind the admin socket at `path`.
    ///
    /// A socket file left by a server that stopped is removed first; if a server still answers on
    /// it, or the path is not a socket, this refuses ([`io::ErrorKind::AddrInUse`],
    /// [`io::ErrorKind::AlreadyExists`]) rather than take it over. The socket is made mode 0600.
    pub async fn bind(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        remove_stale_socket(&path).await?;
        let listener = UnixListener::bind(&path)?;
        let path = RemoveOnDrop(path);
        std::fs::set_permissions(&path.0, std::fs::Permissions::from_mode(0o600))?;
        let owner = std::fs::metadata(&path.0)?.uid();
        Ok(Self {
            listener,
            owner,
            path,
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path.0
    }

    /// Answer requests until `shutdown` becomes `true` (or its sender is dropped), then remove the
    /// socket file. Connections from another user than the server's (other than root) are refused.
    pub async fn serve(
        self,
        admin: Arc<Admin>,
        mut shutdown: watch::Receiver<bool>,
    ) -> io::Result<()> {
        tracing::info!(path = %self.path.0.display(), "serving administration");
        let mut connections = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() {
                    break;
                },
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        connections.spawn(serve_connection(stream, admin.clone(), self.owner));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment rather than spin.
                        tracing::warn!(error = %e, "admin socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        // A request already being carried out finishes in its blocking task; idle connections
        // close.
        connections.shutdown().await;
        tracing::info!("administration stopped");
        Ok(())
    }
}

/// Removes the socket file when serving stops, however it stops.
#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let metadata = match tokio::fs::symlink_metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket: move it away so the server can serve administration there",
                path.display()
            ),
        ));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another server is already serving administration at {}: stop it first",
                path.display()
            ),
        ));
    }
    tracing::debug!(path = %path.display(), "removing a stale admin socket");
    tokio::fs::remove_file(path).await
}

async fn serve_connection(stream: UnixStream, admin: Arc<Admin>, owner: u32) {
    let peer_uid = stream.peer_cred().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    if !matches!(peer_uid, Ok(uid) if uid == owner || uid == 0) {
        tracing::warn!(?peer_uid, "admin connection from another user refused");
        let refusal = AdminResponse::Err {
            message: "administration is only open to the user that runs the server".into(),
        };
        let _ = write_response(&mut write, &refusal).await;
        return;
    }
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        let response = match read_line_bounded(&mut reader, &mut line, MAX_REQUEST_LINE).await {
            Ok(Line::Eof) => return,
            Ok(Line::TooLong) => {
                let refusal = AdminResponse::Err {
                    message: format!(
                        "the request is longer than {MAX_REQUEST_LINE} bytes; send one JSON request per line"
                    ),
                };
                let _ = write_response(&mut write, &refusal).await;
                return;
            }
            Ok(Line::Complete) => match serde_json::from_slice::<AdminRequest>(&line) {
                Ok(req) => {
                    let admin = admin.clone();
                    tokio::task::spawn_blocking(move || admin.handle(req))
                        .await
                        .unwrap_or_else(|e| AdminResponse::Err {
                            message: format!(
                                "the request failed inside the server ({e}); check the server's log"
                            ),
                        })
                }
                Err(e) => AdminResponse::Err {
                    message: format!(
                        "not a valid admin request ({e}); send one JSON request per line"
                    ),
                },
            },
            Err(e) => {
                tracing::debug!(error = %e, "admin connection read failed");
                return;
            }
        };
        if let Err(e) = write_response(&mut write, &response).await {
            tracing::debug!(error = %e, "admin connection write failed");
            return;
        }
    }
}

async fn write_response(
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    response: &AdminResponse,
) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.flush().await
}

/// What [`read_line_bounded`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// A line (without its newline) is in the buffer. A last line without a newline counts.
    Complete,
    /// The peer closed the connection before sending anything more.
    Eof,
    /// The line is longer than allowed; the connection cannot be trusted to be in step any more.
    TooLong,
}

/// Read one line into `buf`, never buffering more than `max` bytes of it.
pub(super) async fn read_line_bounded(
    reader: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Line> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (chunk, used, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if buf.len() + chunk.len() > max {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(chunk);
        reader.consume(used);
        if done {
            return Ok(Line::Complete);
        }
    }
}

/// Send one request to the server running with the admin socket at `path`, and wait for its answer.
///
/// [`AdminError::NotRunning`] means no server answers there (no socket file, or one left by a server
/// that stopped): the caller may then open the store itself.
pub async fn request(
    path: impl AsRef<Path>,
    req: &AdminRequest,
) -> Result<AdminResponse, AdminError> {
    let path = path.as_ref();
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AdminError::NotRunning {
                path: path.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(AdminError::Unreachable {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(req).map_err(|e| AdminError::Protocol(e.to_string()))?;
    line.push(b'\n');
    write.write_all(&line).await?;
    write.flush().await?;
    let mut answer = Vec::new();
    BufReader::new(read).read_until(b'\n', &mut answer).await?;
    if answer.is_empty() {
        return Err(AdminError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection without answering (it may be shutting down)",
        )));
    }
    serde_json::from_slice(&answer).map_err(|e| AdminError::Protocol(e.to_string()))
}
