//! The `sync-server` binary.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use sync_server::auth::Keys;
use sync_server::config::{Cli, Command, ExportArgs, ImportArgs, ServeArgs, TokenArgs};
use sync_server::ids::BoardId;
use sync_server::storage::{self, StorageOptions};
use sync_server::{server, shutdown, telemetry, transfer};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(args)) => serve(*args),
        Some(Command::Export(args)) => runtime(None).and_then(|rt| rt.block_on(export(args))),
        Some(Command::Import(args)) => runtime(None).and_then(|rt| rt.block_on(import(args))),
        Some(Command::Token(args)) => token(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes on one line; no backtrace, whatever RUST_BACKTRACE says.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The multi-threaded runtime. With `node`, every thread of it runs inside that span, so every
/// log line names the node (tasks' own spans are its children).
fn runtime(node: Option<tracing::Span>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(span) = node {
        builder.on_thread_start(move || {
            // Entered for the thread's whole life.
            std::mem::forget(span.clone().entered());
        });
    }
    builder.build().context("cannot start the async runtime")
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format);
    let config = args.config()?;
    let node = tracing::info_span!("node", node = %config.node);
    let _entered = node.clone().entered();
    runtime(Some(node))?.block_on(serve_config(args, config))
}

async fn serve_config(args: ServeArgs, config: sync_server::server::Config) -> anyhow::Result<()> {
    let addr = args.listen_addr()?;
    if config.auth.is_open() {
        tracing::warn!(
            "OPEN DEVELOPMENT MODE: no AUTH_SECRET is set, so every client may read, write and delete every board; set AUTH_SECRET before exposing this server"
        );
    } else {
        tracing::info!("tokens required: signed with the configured AUTH_SECRET");
    }
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let local = listener
        .local_addr()
        .context("listening socket has no address")?;
    // One line on stdout, for people and for scripts that start the server on port 0.
    println!("listening on http://{local}");
    server::run(config, listener, shutdown::signal())
        .await
        .context("server failed")
}

fn token(args: &TokenArgs) -> anyhow::Result<()> {
    let secret = args
        .secret
        .secret()?
        .context("minting a token needs the server's secret: set AUTH_SECRET or AUTH_SECRET_FILE (or pass --auth-secret-file)")?;
    let request = args.request().context("invalid --board")?;
    let minted = Keys::new(&secret)
        .mint(&request)
        .context("cannot mint the token")?;
    println!("{}", minted.token);
    if let Some(link) = args.link(&minted.token) {
        println!("{link}");
    }
    eprintln!(
        "token for board `{}`, role {}, expires at {} (unix seconds)",
        request.scope, request.role, minted.expires_at
    );
    Ok(())
}

async fn export(args: ExportArgs) -> anyhow::Result<()> {
    let id = BoardId::parse(&args.board).context("invalid board id")?;
    let store = storage::open(&args.database_url, &StorageOptions::default())
        .await
        .with_context(|| format!("cannot open {}", storage::redact(&args.database_url)))?;
    let state = transfer::export_board(store.as_ref(), &id)
        .await
        .with_context(|| format!("cannot export board `{id}`"))?;
    store.close().await;
    match &args.output {
        Some(path) => std::fs::write(path, &state)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout()
            .write_all(&state)
            .context("cannot write to stdout")?,
    }
    eprintln!("exported board `{id}`: {} bytes", state.len());
    Ok(())
}

async fn import(args: ImportArgs) -> anyhow::Result<()> {
    let mut snapshot = Vec::new();
    if args.file.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut snapshot)
            .context("cannot read stdin")?;
    } else {
        snapshot = std::fs::read(&args.file)
            .with_context(|| format!("cannot read {}", args.file.display()))?;
    }
    let id = match &args.board {
        Some(raw) => BoardId::parse(raw).context("invalid board id")?,
        None => BoardId::parse(&uuid::Uuid::new_v4().simple().to_string())?,
    };
    let store = storage::open(&args.database_url, &StorageOptions::default())
        .await
        .with_context(|| format!("cannot open {}", storage::redact(&args.database_url)))?;
    let info = transfer::import_board(store.as_ref(), &id, &snapshot)
        .await
        .with_context(|| format!("cannot import into board `{id}`"))?;
    store.close().await;
    println!("{}", info.id);
    eprintln!("imported {} bytes into board `{}`", snapshot.len(), info.id);
    Ok(())
}
