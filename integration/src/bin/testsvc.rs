//! `testsvc`: the small HTTP service workers run in the routerd tests and the demo (see
//! `integration::service`). Prints `listening ADDR` once it accepts connections.

use std::net::SocketAddr;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "testsvc")]
struct Cli {
    /// Where to listen, such as 10.42.0.11:8101.
    #[arg(long)]
    listen: SocketAddr,
    /// The worker's name, put in every answer.
    #[arg(long)]
    worker: String,
    /// The service it stands in for.
    #[arg(long, default_value = "rag-embeddings")]
    service: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen).await?;
        println!("listening {}", listener.local_addr()?);
        integration::service::serve(
            listener,
            integration::service::Service::new(&cli.worker, &cli.service),
        )
        .await;
        anyhow::Ok(())
    })
}
