//! A server binary as a child process: started from a command line, ready once it prints
//! `listening on http://ADDR` on its standard output, stopped gracefully (SIGTERM, through
//! `kill`) or killed (SIGKILL), and started again on the same port. The load generator's
//! reconnect storm and large-board scenarios drive our server this way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// What a command line holds in place of the port.
pub const PORT: &str = "{port}";

/// How long a start may take before it counts as failed.
const START_WITHIN: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the process is killed.
const STOP_WITHIN: Duration = Duration::from_secs(60);

/// A server run as a child process.
#[derive(Debug)]
pub struct ServerProcess {
    /// Program and arguments; [`PORT`] in an argument is replaced by the port.
    command: Vec<String>,
    port: u16,
    /// Where its standard error (and output after the ready line) is appended.
    log: Option<PathBuf>,
    child: Option<Child>,
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl ServerProcess {
    /// A server that runs `command` (with [`PORT`] replaced by `port`), not started yet.
    pub fn new(command: Vec<String>, port: u16, log: Option<PathBuf>) -> anyhow::Result<Self> {
        if command.is_empty() {
            bail!("empty server command");
        }
        Ok(Self {
            command,
            port,
            log,
            child: None,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn log_file(&self) -> anyhow::Result<Stdio> {
        Ok(match &self.log {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?
                .into(),
            None => Stdio::null(),
        })
    }

    /// Starts it and waits for its `listening on` line; returns how long that took.
    pub async fn start(&mut self) -> anyhow::Result<Duration> {
        if self.child.is_some() {
            bail!("already running");
        }
        let port = self.port.to_string();
        let args: Vec<String> = self.command[1..]
            .iter()
            .map(|a| a.replace(PORT, &port))
            .collect();
        let t0 = Instant::now();
        let mut child = Command::new(&self.command[0])
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(self.log_file()?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.command[0]))?;
        let stdout = child.stdout.take().context("no stdout")?;
        self.child = Some(child);
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_WITHIN, async {
            while let Some(line) = lines.next_line().await? {
                if line.starts_with("listening on ") {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        let took = t0.elapsed();
        match ready {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => bail!("the server ended before it listened"),
            Ok(Err(e)) => bail!("reading the server's output: {e}"),
            Err(_) => bail!("the server did not listen within {START_WITHIN:?}"),
        }
        // Keep reading its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(took)
    }

    /// Sends SIGTERM and waits for it to exit (killing it after a minute); returns how long the
    /// graceful shutdown took.
    pub async fn stop(&mut self) -> anyhow::Result<Duration> {
        let mut child = self.child.take().context("not running")?;
        let pid = child.id().context("already exited")?;
        let t0 = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {pid} failed");
        }
        match tokio::time::timeout(STOP_WITHIN, child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                child.kill().await?;
                bail!("the server did not stop within {STOP_WITHIN:?} of SIGTERM (killed)");
            }
        }
        Ok(t0.elapsed())
    }

    /// Kills it (SIGKILL) and waits for it.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }
}
