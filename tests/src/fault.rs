//! A TCP proxy in front of a real server that a test can make fail: pass connections through,
//! close them at once (a server that is down), or hold them unanswered (a server that hangs).
//! It works for any protocol (TLS passes through untouched); existing connections are cut
//! when the mode leaves [`Mode::Pass`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{HarnessError, Result};

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Through to the server.
    Pass = 0,
    /// Closed as soon as accepted.
    Down = 1,
    /// Accepted and never answered.
    Hang = 2,
}

/// Sent to open connections to end them when the upstream changes.
const RECONNECT: u8 = 100;

/// A running proxy; dropping it stops it and cuts every connection.
#[derive(Debug)]
pub struct FaultProxy {
    address: std::net::SocketAddr,
    mode: Arc<AtomicU8>,
    changed: watch::Sender<u8>,
    accepted: Arc<AtomicU64>,
    upstream: Arc<std::sync::Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = self.changed.send(u8::MAX);
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port to `upstream` (`host:port`), passing through.
    pub async fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(HarnessError::io("bind the fault proxy"))?;
        let address = listener
            .local_addr()
            .map_err(HarnessError::io("fault proxy address"))?;
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let (changed, _) = watch::channel(Mode::Pass as u8);
        let accepted = Arc::new(AtomicU64::new(0));
        let upstream = Arc::new(std::sync::Mutex::new(upstream.to_owned()));
        let task = tokio::spawn(accept(
            listener,
            upstream.clone(),
            mode.clone(),
            changed.clone(),
            accepted.clone(),
        ));
        Ok(Self {
            address,
            mode,
            changed,
            accepted,
            upstream,
            task,
        })
    }

    /// `host:port` to connect to instead of the server.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Sets what the proxy does from now on; leaving [`Mode::Pass`] cuts open connections.
    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
        let _ = self.changed.send(mode as u8);
    }

    /// Sends connections to another server (`host:port`) from now on, cutting the open ones:
    /// a server replaced behind the same address.
    pub fn set_upstream(&self, upstream: &str) {
        *self
            .upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = upstream.to_owned();
        // Not a mode: open connections see it and end; new ones go by `mode`.
        let _ = self.changed.send(RECONNECT);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn accept(
    listener: TcpListener,
    upstream: Arc<std::sync::Mutex<String>>,
    mode: Arc<AtomicU8>,
    changed: watch::Sender<u8>,
    accepted: Arc<AtomicU64>,
) {
    while let Ok((client, _)) = listener.accept().await {
        accepted.fetch_add(1, Ordering::SeqCst);
        let current = mode.load(Ordering::SeqCst);
        let mut cut = changed.subscribe();
        let upstream = upstream
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        tokio::spawn(async move {
            if current == Mode::Down as u8 {
                return;
            }
            if current == Mode::Hang as u8 {
                // Held open, unanswered, until the mode changes again.
                let _ = cut.changed().await;
                drop(client);
                return;
            }
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = async {
                    while cut.changed().await.is_ok() {
                        if *cut.borrow() != Mode::Pass as u8 {
                            break;
                        }
                    }
                } => {}
            }
        });
    }
}
