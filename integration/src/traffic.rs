//! Traffic between lab hosts with the `probe` tool: TCP transfers checked end to end with
//! SHA-256.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use crate::lab::{Lab, Ns};
use crate::mesh;

static PORT: AtomicU16 = AtomicU16::new(5000);

/// A fresh TCP/UDP port for a test server.
pub fn next_port() -> u16 {
    PORT.fetch_add(1, Ordering::Relaxed)
}

/// The probe tool built next to the running test.
pub fn probe() -> anyhow::Result<PathBuf> {
    mesh::binary("probe")
}

/// A transfer whose sink is listening: run [`Transfer::source_args`] with the probe in the
/// sending namespace, then [`finish`].
#[derive(Debug)]
pub struct Transfer {
    pub sink: usize,
    pub source_args: Vec<String>,
    pub bytes: u64,
}

/// Starts a sink for `bytes` on `to_ip` in `to`.
pub fn start(lab: &mut Lab, to: &Ns, to_ip: Ipv4Addr, bytes: u64) -> anyhow::Result<Transfer> {
    let port = next_port();
    let listen = format!("{to_ip}:{port}");
    let sink = lab.spawn_listening(
        to,
        &format!("sink-{port}"),
        &probe()?,
        &["tcp-sink", "--listen", &listen],
    )?;
    let source_args = [
        "tcp-source",
        "--connect",
        &listen,
        "--bytes",
        &bytes.to_string(),
        "--seed",
        &port.to_string(),
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    Ok(Transfer {
        sink,
        source_args,
        bytes,
    })
}

fn field(text: &str, key: &str) -> anyhow::Result<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == key)
        .ok_or_else(|| anyhow::anyhow!("no {key} in {text:?}"))?;
    Ok(words.get(at + 1).copied().unwrap_or_default().to_owned())
}

/// Waits for the sink, checks that both ends counted every byte and agree on the SHA-256, and
/// returns the sender's rate in Mbit/s. `sent` is the source's output.
pub fn finish(lab: &mut Lab, transfer: &Transfer, sent: &str) -> anyhow::Result<f64> {
    let status = lab.wait_exit(transfer.sink, Duration::from_secs(120))?;
    let received = lab.proc(transfer.sink).log_text();
    anyhow::ensure!(status.success(), "sink failed: {received}");
    let bytes = transfer.bytes.to_string();
    anyhow::ensure!(field(sent, "sent")? == bytes, "source: {sent}");
    anyhow::ensure!(field(&received, "received")? == bytes, "sink: {received}");
    anyhow::ensure!(
        field(sent, "sha256")? == field(&received, "sha256")?,
        "checksums differ: {sent} / {received}"
    );
    Ok(field(sent, "mbit_s")?.parse()?)
}

/// Sends `bytes` over TCP from `from` to `to_ip` (a host in `to`), checked end to end.
pub fn transfer(
    lab: &mut Lab,
    from: &Ns,
    to: &Ns,
    to_ip: Ipv4Addr,
    bytes: u64,
) -> anyhow::Result<f64> {
    let transfer = start(lab, to, to_ip, bytes)?;
    let args: Vec<&str> = transfer.source_args.iter().map(String::as_str).collect();
    let sent = lab.exec(from, &probe()?.to_string_lossy(), &args)?;
    finish(lab, &transfer, &String::from_utf8_lossy(&sent.stdout))
}

/// The probe's path, for callers that spawn it themselves.
pub fn probe_path() -> anyhow::Result<String> {
    Ok(probe()?.to_string_lossy().into_owned())
}

/// One HTTP call made by the probe inside `ns`, from `source` if given. `request` is
/// `METHOD PATH`; `headers` are `name: value`; `body` is a file sent as the body. Returns the
/// status, the response headers (a JSON object) and the body as JSON (null if it is not).
pub fn http(
    ns: &Ns,
    addr: &str,
    request: &str,
    source: Option<Ipv4Addr>,
    headers: &[&str],
    body: Option<&std::path::Path>,
) -> anyhow::Result<(u16, serde_json::Value, serde_json::Value)> {
    use anyhow::Context as _;
    let (method, path) = request
        .split_once(' ')
        .context("a request is `METHOD PATH`")?;
    let mut args = vec![
        "netns".to_owned(),
        "exec".into(),
        ns.name().into(),
        probe_path()?,
        "http".into(),
        "--addr".into(),
        addr.into(),
        "--method".into(),
        method.into(),
        "--path".into(),
        path.into(),
    ];
    if let Some(ip) = source {
        args.extend(["--source".into(), ip.to_string()]);
    }
    for h in headers {
        args.extend(["--header".into(), (*h).to_owned()]);
    }
    if let Some(file) = body {
        args.extend(["--body-file".into(), file.to_string_lossy().into_owned()]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::lab::run("ip", &refs)?;
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("probe http: {}", String::from_utf8_lossy(&out.stderr)))?;
    let status = reply["status"]
        .as_u64()
        .context("probe reply without a status")? as u16;
    let body = serde_json::from_str(reply["body"].as_str().unwrap_or_default())
        .unwrap_or(serde_json::Value::Null);
    Ok((status, reply["headers"].clone(), body))
}

/// The headers (`name: value`) that sign a POST of `body` (as `body.to_string()` writes it) to
/// `path` with `keys` now, as meshd signs its registrations.
pub fn signed_header_lines(
    keys: &rma_ca::NodeKeys,
    path: &str,
    body: &serde_json::Value,
) -> Vec<String> {
    let now = rma_ca::proof::unix_ms(time::OffsetDateTime::now_utc());
    rma_ca::proof::signed_headers(keys, "POST", path, now, body.to_string().as_bytes())
        .iter()
        .map(|(name, value)| format!("{name}: {value}"))
        .collect()
}
