//! `testsvc`: the small HTTP service workers run in the routerd tests and the demo (see
//! `integration::service`). Prints `listening ADDR` once it accepts connections. Run by
//! meshd's `exec` runner, it takes its address and name from `RMA_MESH_IP`, `RMA_PORT` and
//! `RMA_SERVICE`.

use std::net::{Ipv4Addr, SocketAddr};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "testsvc")]
struct Cli {
    /// Where to listen, such as 10.42.0.11:8101; by default RMA_MESH_IP:RMA_PORT.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The worker's name, put in every answer.
    #[arg(long)]
    worker: String,
    /// The service it stands in for; by default RMA_SERVICE, else rag-embeddings.
    #[arg(long)]
    service: Option<String>,
}

fn from_env() -> anyhow::Result<SocketAddr> {
    let ip: Ipv4Addr = std::env::var("RMA_MESH_IP")?.parse()?;
    let port: u16 = std::env::var("RMA_PORT")?.parse()?;
    Ok((ip, port).into())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listen = match cli.listen {
        Some(listen) => listen,
        None => {
            from_env().map_err(|e| anyhow::anyhow!("no --listen, and RMA_MESH_IP/RMA_PORT: {e}"))?
        }
    };
    let service = cli
        .service
        .or_else(|| std::env::var("RMA_SERVICE").ok())
        .unwrap_or_else(|| "rag-embeddings".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        println!("listening {}", listener.local_addr()?);
        integration::service::serve(
            listener,
            integration::service::Service::new(&cli.worker, &service),
        )
        .await;
        anyhow::Ok(())
    })
}
