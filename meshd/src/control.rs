//! The local status socket: `meshd status` connects, and the daemon writes one JSON snapshot of
//! [`Status`] and closes the connection.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::status::Status;

/// A request from a status connection to the event loop, which owns the node.
pub type StatusRequest = oneshot::Sender<Status>;

/// The bound status socket; the file is removed when this is dropped.
#[derive(Debug)]
pub struct StatusSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl StatusSocket {
    /// Binds `path`, creating its directory, and replacing a stale socket that nobody serves.
    pub async fn bind(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                anyhow::bail!("{}: exists and is not a socket", path.display());
            }
            if UnixStream::connect(path).await.is_ok() {
                anyhow::bail!("{}: another meshd is serving this socket", path.display());
            }
            std::fs::remove_file(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    /// Answers connections until the event loop goes away.
    pub async fn serve(self, requests: mpsc::Sender<StatusRequest>) {
        loop {
            let Ok((mut stream, _)) = self.listener.accept().await else {
                continue;
            };
            let (reply, status) = oneshot::channel();
            if requests.send(reply).await.is_err() {
                return;
            }
            let Ok(status) = status.await else { return };
            tokio::spawn(async move {
                if let Ok(json) = serde_json::to_vec(&status) {
                    let _ = stream.write_all(&json).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    }
}

impl Drop for StatusSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one status snapshot from a running meshd.
pub async fn fetch(path: &Path) -> io::Result<Status> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: {e} (is meshd running?)", path.display()),
        )
    })?;
    let mut json = Vec::new();
    stream.read_to_end(&mut json).await?;
    serde_json::from_slice(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
