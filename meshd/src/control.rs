//! The local status socket. A client sends one request line and reads the answer:
//!
//! - `status`: one JSON [`Status`] snapshot, then the connection closes;
//! - `ping TARGET COUNT`: one JSON [`PingLine`] per probe, a probe a second, then it closes.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::node::Pong;
use crate::status::Status;

/// What a connection asks of the event loop, which owns the node.
#[derive(Debug)]
pub enum Request {
    Status(oneshot::Sender<Status>),
    /// Send one probe to `target`; the reply gives its sequence number and where the answer
    /// will come, or why no probe was sent.
    Ping {
        target: String,
        reply: oneshot::Sender<Result<(u32, oneshot::Receiver<Pong>), String>>,
    },
}

/// One line of `ping` output.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PingLine {
    Pong(Pong),
    Timeout { seq: u32 },
    Error { message: String },
}

/// How long a probe may take to be answered.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between probes, like `ping`'s default interval.
const PING_INTERVAL: Duration = Duration::from_secs(1);
/// Requests are one short line.
const MAX_REQUEST: u64 = 256;

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

    /// Answers connections, each in its own task, until the event loop goes away.
    pub async fn serve(self, requests: mpsc::Sender<Request>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            tokio::spawn(answer(stream, requests.clone()));
        }
    }
}

impl Drop for StatusSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, requests: mpsc::Sender<Request>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST);
    if tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .is_err()
    {
        return;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["status"] => {
            let (reply, status) = oneshot::channel();
            if requests.send(Request::Status(reply)).await.is_ok()
                && let Ok(status) = status.await
                && let Ok(json) = serde_json::to_vec(&status)
            {
                let _ = write.write_all(&json).await;
            }
        }
        ["ping", target, count] => {
            let count: u32 = count.parse().unwrap_or(0);
            for i in 0..count {
                let line = probe(&requests, target).await;
                let stop = matches!(line, PingLine::Error { .. });
                let Ok(mut json) = serde_json::to_vec(&line) else {
                    return;
                };
                json.push(b'\n');
                if write.write_all(&json).await.is_err() || stop {
                    break;
                }
                if i + 1 < count {
                    tokio::time::sleep(PING_INTERVAL).await;
                }
            }
        }
        _ => {
            let message = format!("unknown request {:?}", line.trim());
            if let Ok(json) = serde_json::to_vec(&PingLine::Error { message }) {
                let _ = write.write_all(&json).await;
            }
        }
    }
    let _ = write.shutdown().await;
}

async fn probe(requests: &mpsc::Sender<Request>, target: &str) -> PingLine {
    let (reply, sent) = oneshot::channel();
    let request = Request::Ping {
        target: target.to_owned(),
        reply,
    };
    if requests.send(request).await.is_err() {
        return PingLine::Error {
            message: "meshd is shutting down".into(),
        };
    }
    let (seq, pong) = match sent.await {
        Ok(Ok(sent)) => sent,
        Ok(Err(message)) => return PingLine::Error { message },
        Err(_) => {
            return PingLine::Error {
                message: "meshd is shutting down".into(),
            };
        }
    };
    match tokio::time::timeout(PING_TIMEOUT, pong).await {
        Ok(Ok(pong)) => PingLine::Pong(pong),
        _ => PingLine::Timeout { seq },
    }
}

async fn request(path: &Path, line: &str) -> io::Result<Vec<u8>> {
    let mut stream = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{}: {e} (is meshd running?)", path.display()),
        )
    })?;
    stream.write_all(line.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// Reads one status snapshot from a running meshd.
pub async fn fetch(path: &Path) -> io::Result<Status> {
    let json = request(path, "status\n").await?;
    serde_json::from_slice(&json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Asks a running meshd to probe `target` `count` times.
pub async fn ping(path: &Path, target: &str, count: u32) -> io::Result<Vec<PingLine>> {
    if target.chars().any(char::is_whitespace) || target.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a peer name or mesh IP has no spaces",
        ));
    }
    let answer = request(path, &format!("ping {target} {count}\n")).await?;
    answer
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_slice(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        })
        .collect()
}
