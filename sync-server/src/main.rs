//! The `sync-server` binary.

use anyhow::Context;
use clap::Parser;
use sync_server::config::{Cli, Command};
use sync_server::{server, shutdown, telemetry};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    telemetry::init(args.log_format);
    let addr = args.listen_addr()?;
    tracing::warn!(
        "no authentication is configured: open development mode, every client may read and write every board"
    );
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("listening socket has no address")?;
    // One line on stdout, for people and for scripts that start the server on port 0.
    println!("listening on http://{local}");
    server::run(args.config(), listener, shutdown::signal())
        .await
        .context("server failed")
}
