//! A minimal in-memory y-websocket relay: the floor for the fan-out benchmark.
//!
//! One `yrs::Doc` per board (the last URL path segment). On connect it sends SyncStep1; it answers
//! SyncStep1 with SyncStep2, applies each update (or SyncStep2) to the board's doc and forwards
//! it to every other connection of the board; awareness frames go to everyone, sender included.
//! No persistence, no auth, no awareness bookkeeping. Single-threaded: one core does it all.
//!
//! `relay --bind 127.0.0.1 --port 0` prints `listening on http://127.0.0.1:<port>`.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use harness::wire::{self, Frame};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

#[derive(Debug, Parser)]
#[command(about = "Minimal in-memory y-websocket relay (benchmark floor)")]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Port (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
}

#[derive(Debug)]
struct Board {
    doc: Doc,
    conns: HashMap<u64, mpsc::UnboundedSender<Message>>,
}

type Boards = Arc<Mutex<HashMap<String, Arc<Mutex<Board>>>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::new(args.bind, args.port)).await?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    std::io::stdout().flush()?;
    let boards: Boards = Arc::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        next_id += 1;
        let id = next_id;
        let boards = boards.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, id, boards).await {
                eprintln!("connection {id}: {e:#}");
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn connection(stream: TcpStream, id: u64, boards: Boards) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut path = String::new();
    let ws = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, resp: Response| {
            path = req.uri().path().to_string();
            Ok(resp)
        },
        Some(wire::ws_config()),
    )
    .await
    .context("handshake")?;
    let name = path.rsplit('/').next().unwrap_or_default().to_string();
    let board = lock(&boards)
        .entry(name.clone())
        .or_insert_with(|| {
            Arc::new(Mutex::new(Board {
                doc: Doc::new(),
                conns: HashMap::new(),
            }))
        })
        .clone();

    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.feed(msg).await.is_err() {
                return;
            }
            while let Ok(msg) = rx.try_recv() {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });

    {
        // Register and send step 1 under the board lock: no update falls in between.
        let mut b = lock(&board);
        let sv = b.doc.transact().state_vector();
        let _ = tx.send(Message::Binary(wire::step1_frame(&sv)));
        b.conns.insert(id, tx.clone());
    }

    let result = read_loop(&mut stream, id, &board, &tx).await;

    {
        let mut b = lock(&board);
        b.conns.remove(&id);
        if b.conns.is_empty() {
            let mut all = lock(&boards);
            if all.get(&name).is_some_and(|x| Arc::ptr_eq(x, &board)) {
                all.remove(&name);
            }
        }
    }
    drop(tx);
    let _ = writer.await;
    result
}

async fn read_loop<S>(
    stream: &mut S,
    id: u64,
    board: &Mutex<Board>,
    tx: &mpsc::UnboundedSender<Message>,
) -> anyhow::Result<()>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(msg) = stream.next().await {
        let data: Bytes = match msg? {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        match wire::parse(&data)? {
            Frame::Step1(sv) => {
                let sv = StateVector::decode_v1(sv)?;
                let update = lock(board).doc.transact().encode_state_as_update_v1(&sv);
                let _ = tx.send(Message::Binary(wire::step2_frame(update)));
            }
            Frame::Step2(u) | Frame::Update(u) => {
                let update = Update::decode_v1(u)?;
                if update.is_empty() {
                    continue;
                }
                let forward: Bytes = if data[1] == wire::SYNC_UPDATE {
                    data.clone()
                } else {
                    wire::update_frame(u)
                };
                let b = lock(board);
                b.doc.transact_mut().apply_update(update)?;
                for (&other, conn) in &b.conns {
                    if other != id {
                        let _ = conn.send(Message::Binary(forward.clone()));
                    }
                }
            }
            Frame::Awareness => {
                for conn in lock(board).conns.values() {
                    let _ = conn.send(Message::Binary(data.clone()));
                }
            }
            Frame::QueryAwareness | Frame::Other(_) => {}
        }
    }
    Ok(())
}
