//! A traffic tool for the end-to-end tests, run inside lab namespaces: checked TCP transfers,
//! UDP echo, forged-source packets and hostile datagrams.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};

#[derive(Debug, Parser)]
#[command(name = "probe")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Accept one TCP connection, read it to the end, print `received BYTES sha256 HEX`.
    TcpSink {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send BYTES of seeded pseudo-random data, print `sent BYTES sha256 HEX mbit_s RATE`.
    TcpSource {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        bytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Pause this long after each 64 KiB, to keep a stream open for a while.
        #[arg(long, default_value_t = 0)]
        pace_ms: u64,
    },
    /// Echo every UDP datagram back to its sender, printing one line per datagram.
    UdpEcho {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send COUNT datagrams and count the echoes: print `echoed N of COUNT`.
    UdpPing {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 10)]
        count: u32,
    },
    /// Send UDP datagrams with a forged IPv4 source address through a raw socket.
    Spoof {
        #[arg(long)]
        src: Ipv4Addr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 5)]
        count: u32,
    },
    /// Send hostile datagrams: random bytes, truncated WireGuard handshakes, malformed control
    /// messages and hellos carrying garbage instead of a certificate.
    Garbage {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: u32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Open `count` TCP connections that send random bytes (no TLS), one after another, and
    /// wait for the server to close each; prints how many it closed within `within` seconds.
    TcpGarbage {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 50)]
        count: u32,
        #[arg(long, default_value_t = 5)]
        within: u64,
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
    /// Open `count` TCP connections that send nothing, print `listening`, then how many the
    /// server closed within a second, and hold the rest open for `secs` seconds.
    TcpHold {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 100)]
        count: u32,
        #[arg(long, default_value_t = 15)]
        secs: u64,
    },
    /// Answer fixed-size requests on one TCP connection at a time, byte for byte.
    RrServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// COUNT request/response exchanges of SIZE bytes over one TCP connection (like netperf
    /// TCP_RR); print `rr COUNT median_us M p99_us P`.
    RrClient {
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// Fetch `http://ADDR/PATH` (HTTP/1.0) and print the response body.
    HttpGet {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/")]
        path: String,
    },
    /// One HTTP call; prints `{"status": N, "headers": {...}, "body": "..."}`.
    Http {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "/")]
        path: String,
        /// Send from this address (such as the node's mesh IP).
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        /// `name: value`, repeatable.
        #[arg(long)]
        header: Vec<String>,
        #[arg(long)]
        body_file: Option<std::path::PathBuf>,
    },
    /// GETs `path` back to back on CONCURRENCY connections for MILLIS; prints a JSON summary:
    /// calls, failures (with the first few), and who answered when (`worker` in the reply).
    HttpStream {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        path: String,
        #[arg(long)]
        millis: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Connect to a lighthouse over QUIC with the given certificate and try to register; print
    /// `registered` or `refused: REASON`.
    QuicRegister {
        #[arg(long)]
        to: SocketAddr,
        /// The lighthouse's name, as in a node's config.
        #[arg(long)]
        name: String,
        #[arg(long)]
        ca: std::path::PathBuf,
        #[arg(long)]
        cert: std::path::PathBuf,
        #[arg(long)]
        key: std::path::PathBuf,
    },
    /// Send RATE hostile datagrams a second for SECONDS: random bytes, handshake initiations
    /// and responses with a valid MAC1 for the WireGuard key KEY (hex), and hellos (asking for
    /// an answer, padded or not) with each certificate in CERT (PEM, repeatable), from one
    /// socket. Count what comes back; print `flood sent N bytes B answers M bytes A largest L`.
    Flood {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        key: String,
        #[arg(long)]
        cert: Vec<std::path::PathBuf>,
        #[arg(long, default_value_t = 20_000)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
    /// Send a certificate hello carrying the certificate in FILE (PEM).
    Hello {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        cert: std::path::PathBuf,
    },
}

/// xorshift64*: fast, seeded, the same on both ends.
/// Whether the other side closed `stream` (or reset it) before its read timeout.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs an HTTP command on a small runtime.
fn http_command(command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::Http {
                addr,
                method,
                path,
                source,
                header,
                body_file,
            } => {
                let headers: Vec<(&str, &str)> = header
                    .iter()
                    .filter_map(|h| h.split_once(':'))
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .collect();
                let body = match body_file {
                    Some(path) => bytes::Bytes::from(std::fs::read(path)?),
                    None => bytes::Bytes::new(),
                };
                let reply = integration::http::call(
                    addr,
                    source,
                    &method,
                    &path,
                    &headers,
                    body,
                    Duration::from_secs(10),
                )
                .await?;
                let headers: serde_json::Map<String, serde_json::Value> = reply
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().into()))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "status": reply.status.as_u16(),
                        "headers": headers,
                        "body": String::from_utf8_lossy(&reply.body),
                    })
                );
            }
            Command::HttpStream {
                addr,
                path,
                millis,
                concurrency,
            } => {
                let started = Instant::now();
                let end = started + Duration::from_millis(millis);
                println!("started");
                let mut tasks = Vec::new();
                for _ in 0..concurrency {
                    let path = path.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut answers = Vec::new();
                        let mut failures = Vec::new();
                        while Instant::now() < end {
                            let at = started.elapsed().as_millis() as u64;
                            match integration::http::get(addr, &path, &[]).await {
                                Ok(r) if r.status == 200 => {
                                    let worker = r
                                        .json()
                                        .ok()
                                        .and_then(|v| v["worker"].as_str().map(str::to_owned))
                                        .unwrap_or_default();
                                    answers.push((at, worker));
                                }
                                Ok(r) => failures.push(format!(
                                    "{at} ms: {} {}",
                                    r.status,
                                    String::from_utf8_lossy(&r.body)
                                )),
                                Err(e) => failures.push(format!("{at} ms: {e:#}")),
                            }
                        }
                        (answers, failures)
                    }));
                }
                let mut answers = Vec::new();
                let mut failures = Vec::new();
                for task in tasks {
                    let (a, f) = task.await?;
                    answers.extend(a);
                    failures.extend(f);
                }
                answers.sort();
                println!(
                    "{}",
                    serde_json::json!({
                        "calls": answers.len() + failures.len(),
                        "failed": failures.len(),
                        "failures": failures.iter().take(5).collect::<Vec<_>>(),
                        "answers": answers,
                    })
                );
            }
            _ => unreachable!("only HTTP commands come here"),
        }
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        command @ (Command::Http { .. } | Command::HttpStream { .. }) => http_command(command)?,
        Command::TcpSink { listen } => {
            let listener = TcpListener::bind(listen)?;
            println!("listening {listen}");
            let (mut stream, _) = listener.accept()?;
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hash.update(&buf[..n]);
                total += n as u64;
            }
            println!("received {total} sha256 {}", hex(&hash.finalize()));
        }
        Command::TcpSource {
            connect,
            bytes,
            seed,
            pace_ms,
        } => {
            let mut stream = TcpStream::connect_timeout(&connect, Duration::from_secs(10))
                .with_context(|| format!("connecting to {connect}"))?;
            // A path that stops carrying fails the transfer instead of hanging it.
            stream.set_write_timeout(Some(Duration::from_secs(30)))?;
            stream.set_read_timeout(Some(Duration::from_secs(60)))?;
            let mut prng = Prng(seed.max(1));
            let mut hash = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            let started = Instant::now();
            let mut left = bytes;
            while left > 0 {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                prng.fill(&mut buf[..n]);
                stream.write_all(&buf[..n])?;
                hash.update(&buf[..n]);
                left -= n as u64;
                if pace_ms > 0 {
                    std::thread::sleep(Duration::from_millis(pace_ms));
                }
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            // Wait for the receiver to close, so the rate counts delivered bytes.
            let _ = stream.read(&mut buf);
            let secs = started.elapsed().as_secs_f64();
            let rate = bytes as f64 * 8.0 / secs / 1e6;
            println!(
                "sent {bytes} sha256 {} mbit_s {rate:.0}",
                hex(&hash.finalize())
            );
        }
        Command::UdpEcho { listen } => {
            let socket = UdpSocket::bind(listen)?;
            println!("listening {listen}");
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = socket.recv_from(&mut buf)?;
                println!("datagram {n} from {from}");
                socket.send_to(&buf[..n], from)?;
            }
        }
        Command::UdpPing { to, count } => {
            // Connected, so that an ICMP unreachable comes back as "connection refused".
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.connect(to)?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            let (mut echoed, mut refused) = (0, 0);
            let mut buf = [0u8; 64];
            for i in 0..count {
                if let Err(e) = socket.send(&i.to_be_bytes()) {
                    refused += u32::from(e.kind() == std::io::ErrorKind::ConnectionRefused);
                    continue;
                }
                match socket.recv(&mut buf) {
                    Ok(4) if buf[..4] == i.to_be_bytes() => echoed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => refused += 1,
                    _ => {}
                }
            }
            println!("echoed {echoed} of {count}, refused {refused}");
        }
        Command::Spoof { src, to, count } => {
            let SocketAddr::V4(to) = to else {
                anyhow::bail!("IPv4 only")
            };
            let socket = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(255)),
            )?;
            for i in 0..count {
                let packet = udp_packet(src, to, &i.to_be_bytes());
                socket.send_to(&packet, &SocketAddr::V4(to).into())?;
            }
            println!("spoofed {count} from {src}");
        }
        Command::TcpGarbage {
            to,
            count,
            within,
            seed,
        } => {
            let mut prng = Prng(seed.max(1));
            let mut closed = 0;
            for _ in 0..count {
                let mut stream = TcpStream::connect(to)?;
                let mut bytes = vec![0u8; 1 + (prng.next() % 2000) as usize];
                prng.fill(&mut bytes);
                // The server may close before it has read everything.
                let _ = stream.write_all(&bytes);
                stream.set_read_timeout(Some(Duration::from_secs(within)))?;
                if closed_by_peer(&mut stream) {
                    closed += 1;
                }
            }
            println!("closed: {closed} of {count}");
        }
        Command::TcpHold { to, count, secs } => {
            let started = Instant::now();
            let mut streams = (0..count)
                .map(|_| TcpStream::connect(to))
                .collect::<Result<Vec<_>, _>>()?;
            println!("listening: {count} connections open");
            std::io::stdout().flush()?;
            let mut closed = 0;
            for stream in &mut streams {
                stream.set_read_timeout(Some(Duration::from_millis(
                    1000 / u64::from(count.max(1)) + 1,
                )))?;
                if closed_by_peer(stream) {
                    closed += 1;
                }
            }
            println!("closed at once: {closed} of {count}");
            std::io::stdout().flush()?;
            std::thread::sleep(Duration::from_secs(secs).saturating_sub(started.elapsed()));
        }
        Command::Garbage { to, count, seed } => {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            let mut prng = Prng(seed.max(1));
            for i in 0..count {
                let len = (prng.next() % 1400) as usize;
                let mut datagram = vec![0u8; len];
                prng.fill(&mut datagram);
                match i % 4 {
                    0 => {}
                    1 => {
                        // A WireGuard handshake initiation cut short, or of the right size
                        // but with random contents.
                        datagram.resize((prng.next() % 149) as usize, 0);
                        datagram.splice(0..datagram.len().min(4), [1, 0, 0, 0]);
                    }
                    2 => {
                        // A control header whose length field lies.
                        datagram.resize(datagram.len().max(8), 0);
                        datagram[..6].copy_from_slice(&[0xF0, b'R', b'M', 1, 1, 1]);
                    }
                    _ => {
                        // A well-formed hello whose certificate is garbage.
                        let body = datagram.len().min(3000);
                        let mut hello = vec![0xF0, b'R', b'M', 1, 1, 1];
                        hello.extend_from_slice(&(body as u16).to_be_bytes());
                        hello.extend_from_slice(&datagram[..body]);
                        datagram = hello;
                    }
                }
                socket.send_to(&datagram, to)?;
            }
            println!("sent {count} hostile datagrams");
        }
        Command::Flood {
            to,
            key,
            cert,
            rate,
            seconds,
            seed,
        } => flood(to, &key, &cert, rate, seconds, seed)?,
        Command::RrServer { listen } => {
            let listener = TcpListener::bind(listen)?;
            println!("listening {listen}");
            for stream in listener.incoming() {
                let mut stream = stream?;
                stream.set_nodelay(true)?;
                let mut buf = [0u8; 4096];
                loop {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    stream.write_all(&buf[..n])?;
                }
            }
        }
        Command::RrClient {
            connect,
            count,
            size,
        } => {
            let mut stream = TcpStream::connect_timeout(&connect, Duration::from_secs(10))?;
            stream.set_nodelay(true)?;
            let request = vec![0x5a; size];
            let mut response = vec![0u8; size];
            let mut rtts = Vec::with_capacity(count);
            for _ in 0..count {
                let started = Instant::now();
                stream.write_all(&request)?;
                stream.read_exact(&mut response)?;
                rtts.push(started.elapsed());
            }
            rtts.sort();
            let at =
                |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)].as_micros();
            println!("rr {count} median_us {} p99_us {}", at(0.5), at(0.99));
        }
        Command::HttpGet { addr, path } => {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            let (head, body) = response
                .split_once("\r\n\r\n")
                .context("no HTTP header end")?;
            anyhow::ensure!(
                head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
                "{head}"
            );
            print!("{body}");
        }
        Command::QuicRegister {
            to,
            name,
            ca,
            cert,
            key,
        } => {
            let ca = rma_ca::CaCert::from_bytes(&std::fs::read(ca)?)?;
            let cert = rma_ca::NodeCert::from_bytes(&std::fs::read(cert)?)?;
            let keys = rma_ca::NodeKeys::from_pem(&std::fs::read(key)?)?;
            let config = integration::quic_client::client_config(&cert, &keys, &ca)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let outcome = runtime.block_on(async {
                let endpoint = integration::quic_client::endpoint([0, 0, 0, 0].into())?;
                let registered =
                    integration::quic_client::register(&endpoint, config, to, &name, vec![])
                        .await?;
                registered.connection.close(0u32.into(), b"done");
                anyhow::Ok(())
            });
            match outcome {
                Ok(()) => println!("registered"),
                Err(e) => println!("refused: {e:#}"),
            }
        }
        Command::Hello { to, cert } => {
            let text = std::fs::read(&cert)?;
            let der = pem_der(&text).context("not a PEM certificate")?;
            let mut hello = vec![0xF0, b'R', b'M', 1, 1, 1];
            hello.extend_from_slice(&(der.len() as u16).to_be_bytes());
            hello.extend_from_slice(&der);
            UdpSocket::bind("0.0.0.0:0")?.send_to(&hello, to)?;
            println!("sent hello");
        }
    }
    Ok(())
}

/// The datagrams of `flood`: what an unauthenticated sender can make, valid MACs included.
fn flood(
    to: SocketAddr,
    key: &str,
    certs: &[std::path::PathBuf],
    rate: u32,
    seconds: u64,
    seed: u64,
) -> anyhow::Result<()> {
    let mut public = [0u8; 32];
    anyhow::ensure!(key.len() == 64, "--key is 64 hex digits");
    for (i, byte) in public.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&key[2 * i..2 * i + 2], 16)?;
    }
    let mut hellos = Vec::new();
    for path in certs {
        let der = pem_der(&std::fs::read(path)?).context("a PEM certificate")?;
        for reply_wanted in [false, true] {
            let mut hello = Vec::new();
            rma_proto::wire::encode_cert_hello(&der, reply_wanted, &mut hello);
            hellos.push(hello);
        }
        // Asking for an answer without the padding that pays for it.
        let mut short = Vec::new();
        rma_proto::wire::encode_cert_hello(&der, false, &mut short);
        short[5] = 1;
        hellos.push(short);
    }
    // Made before the clock starts, so that sending costs the flood little of the CPU it
    // shares with the node under test.
    let mut prng = Prng(seed.max(1));
    let pool: Vec<Vec<u8>> = (0..4096)
        .map(|_| {
            let mut filler = [0u8; 108];
            prng.fill(&mut filler);
            match prng.next() % 8 {
                0 | 1 => {
                    let mut random = vec![0u8; (prng.next() % 1400) as usize];
                    prng.fill(&mut random);
                    random
                }
                2 | 3 => {
                    meshd::forge::handshake_init(&public, prng.next() as u32, &filler).to_vec()
                }
                4 => {
                    let mut rest = [0u8; 48];
                    rest.copy_from_slice(&filler[..48]);
                    // Sessions are numbered from slot 0 up: aim at the first few.
                    let receiver = ((prng.next() % 4) << 8) as u32;
                    meshd::forge::handshake_response(&public, prng.next() as u32, receiver, &rest)
                        .to_vec()
                }
                _ if !hellos.is_empty() => hellos[(prng.next() as usize) % hellos.len()].clone(),
                _ => vec![0xF0],
            }
        })
        .collect();
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_nonblocking(true)?;
    let (mut sent, mut sent_bytes) = (0u64, 0u64);
    let (mut answers, mut answer_bytes, mut largest) = (0u64, 0u64, 0usize);
    let mut buf = [0u8; 65_536];
    let started = Instant::now();
    let total = u64::from(rate) * seconds;
    while sent < total {
        // Paced: datagram `sent` leaves at sent / rate seconds.
        let due = Duration::from_secs_f64(sent as f64 / f64::from(rate));
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let datagram = &pool[(sent % pool.len() as u64) as usize];
        match socket.send_to(datagram, to) {
            Ok(_) => {
                sent += 1;
                sent_bytes += datagram.len() as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
        while let Ok((len, _)) = socket.recv_from(&mut buf) {
            answers += 1;
            answer_bytes += len as u64;
            largest = largest.max(len);
        }
    }
    // Answers still on their way.
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_millis(500) {
        match socket.recv_from(&mut buf) {
            Ok((len, _)) => {
                answers += 1;
                answer_bytes += len as u64;
                largest = largest.max(len);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    println!(
        "flood sent {sent} bytes {sent_bytes} answers {answers} bytes {answer_bytes} largest {largest} seconds {:.1}",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn pem_der(text: &[u8]) -> Option<Vec<u8>> {
    rma_ca::NodeCert::from_bytes(text)
        .ok()
        .map(|c| c.der().to_vec())
}

/// An IPv4 + UDP packet with the given source; the kernel fills in the IP checksum.
fn udp_packet(src: Ipv4Addr, to: std::net::SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&to.ip().octets());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&to.port().to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}
