//! A TCP proxy on loopback: in front of Prometheus it holds each answer for a delay the soak
//! sets (a slow upstream); in front of the two `ebb serve` replicas it is their Service
//! (each connection to the next replica that accepts it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy; it stops when dropped.
pub struct Proxy {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards each connection to the first of `backends`
    /// (round robin) that accepts it.
    pub async fn start(backends: Vec<SocketAddr>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let delay_ms = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicUsize::new(0));
        let backends = Arc::new(backends);
        let task = tokio::spawn({
            let delay_ms = delay_ms.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (backends, next, delay_ms) =
                        (backends.clone(), next.clone(), delay_ms.clone());
                    tokio::spawn(async move {
                        let first = next.fetch_add(1, Relaxed);
                        for i in 0..backends.len() {
                            let backend = backends[(first + i) % backends.len()];
                            if let Ok(upstream) = TcpStream::connect(backend).await {
                                pipe(client, upstream, delay_ms).await;
                                return;
                            }
                        }
                        // No backend: the client sees the connection closed.
                    });
                }
            }
        });
        Ok(Self {
            addr,
            delay_ms,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds each answer this long from now on (zero: none).
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways; the first bytes of each answer (upstream to client, after the client
/// wrote) wait for the delay.
async fn pipe(client: TcpStream, upstream: TcpStream, delay_ms: Arc<AtomicU64>) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut upstream_rx, mut upstream_tx) = upstream.into_split();
    let asked = Arc::new(AtomicBool::new(false));
    let requests = {
        let asked = asked.clone();
        async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match client_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                asked.store(true, Relaxed);
                if upstream_tx.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
            let _ = upstream_tx.shutdown().await;
        }
    };
    let answers = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match upstream_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = delay_ms.load(Relaxed);
            if delay > 0 && asked.swap(false, Relaxed) {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if client_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(requests, answers);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> Vec<u8> {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        buf.to_vec()
    }

    #[tokio::test]
    async fn answers_wait_for_the_delay_and_a_dead_backend_is_skipped() {
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let proxy = Proxy::start(vec![dead, echo().await]).await.unwrap();
        for _ in 0..3 {
            assert_eq!(round_trip(proxy.addr()).await, b"ping");
        }
        proxy.set_delay(Duration::from_millis(300));
        let start = tokio::time::Instant::now();
        assert_eq!(round_trip(proxy.addr()).await, b"ping");
        // A lower bound: a loaded machine only makes it later.
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "{:?}",
            start.elapsed()
        );
    }
}
