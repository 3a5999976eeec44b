//! A TCP proxy between a client and a real server, for what a network does to a transfer:
//! it counts the bytes each way (so a test can prove a restore read the object once) and can
//! cut connections after a number of bytes from the server, or to it (so a test can prove a
//! transfer resumes where it broke, instead of starting over).
//!
//! Blocking threads, one pair per connection: tests move at most a few GiB through it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

/// What the proxy does to traffic.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Cut a connection once it has carried this many bytes from the server...
    pub cut_after: Option<u64>,
    /// ... this many times in all (then pass everything).
    pub cuts: u64,
    /// Count the bytes *to* the server for `cut_after` instead (cut uploads).
    pub upstream: bool,
    /// At most this many bytes per second from the server, per connection: a link where one
    /// stream is slow (latency, a shaped WAN), so parallel streams show their worth.
    pub rate: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Counters {
    /// Bytes from the server to clients.
    pub downstream: AtomicU64,
    /// Bytes from clients to the server.
    pub upstream: AtomicU64,
    /// Connections cut so far.
    pub cut: AtomicU64,
    /// Connections accepted so far.
    pub connections: AtomicU64,
    /// Connections open now (until the server's side of one has ended)...
    pub open: AtomicU64,
    /// ... and the most that were open at once: whether a client read in parallel.
    pub peak_open: AtomicU64,
}

pub struct Proxy {
    pub port: u16,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free 127.0.0.1 port and forwards to `127.0.0.1:upstream`.
    pub fn start(upstream: u16, faults: Faults) -> Proxy {
        Self::start_on(0, upstream, faults)
    }

    pub fn start_on(port: u16, upstream: u16, faults: Faults) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("proxy: cannot listen");
        let port = listener.local_addr().expect("proxy: local address").port();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counters.clone(), stop.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                c.connections.fetch_add(1, Ordering::Relaxed);
                let open = c.open.fetch_add(1, Ordering::SeqCst) + 1;
                c.peak_open.fetch_max(open, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    c.open.fetch_sub(1, Ordering::SeqCst);
                    continue;
                };
                let cut_here = faults
                    .cut_after
                    .filter(|_| c.cut.load(Ordering::Relaxed) < faults.cuts)
                    .map(|limit| (limit, faults.cuts));
                let (cut_up, cut_down) = match faults.upstream {
                    true => (cut_here, None),
                    false => (None, cut_here),
                };
                relay(client, server, c.clone(), cut_up, (cut_down, faults.rate));
            }
        });
        Proxy { port, counters, stop }
    }

    pub fn downstream(&self) -> u64 {
        self.counters.downstream.load(Ordering::Relaxed)
    }

    pub fn upstream(&self) -> u64 {
        self.counters.upstream.load(Ordering::Relaxed)
    }

    pub fn cuts(&self) -> u64 {
        self.counters.cut.load(Ordering::Relaxed)
    }

    /// The most connections that were open at the same time.
    pub fn peak_connections(&self) -> u64 {
        self.counters.peak_open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A cut: after this many bytes on one connection, while fewer than this many cuts were made.
type Cut = Option<(u64, u64)>;

fn relay(client: TcpStream, server: TcpStream, counters: Arc<Counters>, cut_up: Cut, down: (Cut, Option<u64>)) {
    let (Ok(client_r), Ok(server_r)) = (client.try_clone(), server.try_clone()) else {
        counters.open.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let up = counters.clone();
    thread::spawn(move || {
        pump(
            client_r,
            server,
            |n| up.upstream.fetch_add(n, Ordering::Relaxed),
            (cut_up, None),
            &up,
        )
    });
    thread::spawn(move || {
        pump(
            server_r,
            client,
            |n| counters.downstream.fetch_add(n, Ordering::Relaxed),
            down,
            &counters,
        );
        counters.open.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Copies `from` to `to`, counting; with `cut`, drops both ends after that many bytes (unless
/// the connections cut meanwhile have used up the number of cuts).
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    count: impl Fn(u64) -> u64,
    (mut cut, rate): (Cut, Option<u64>),
    counters: &Counters,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut carried = 0u64;
    let started = std::time::Instant::now();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let allowed = match cut {
            Some((limit, _)) => n.min(usize::try_from(limit.saturating_sub(carried)).unwrap_or(usize::MAX)),
            None => n,
        };
        // Counted before it is written, so a client that has read it sees it counted.
        carried += allowed as u64;
        count(allowed as u64);
        if allowed > 0 && to.write_all(&buf[..allowed]).is_err() {
            break;
        }
        if let Some(rate) = rate.filter(|r| *r > 0) {
            let due = std::time::Duration::from_secs_f64(carried as f64 / rate as f64);
            thread::sleep(due.saturating_sub(started.elapsed()));
        }
        if let Some((_, cuts)) = cut.filter(|(limit, _)| carried >= *limit) {
            let counted = counters
                .cut
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < cuts).then_some(c + 1));
            if counted.is_ok() {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            // The cuts are used up: pass the rest, including what was held back.
            cut = None;
            if n > allowed && to.write_all(&buf[allowed..n]).is_err() {
                break;
            }
            count((n - allowed) as u64);
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that sends `n` bytes to each client, then closes.
    fn sender(n: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                let _ = c.write_all(&vec![7u8; n]);
            }
        });
        port
    }

    fn fetch(port: u16) -> usize {
        let mut got = Vec::new();
        let _ = TcpStream::connect(("127.0.0.1", port)).unwrap().read_to_end(&mut got);
        got.len()
    }

    /// A proxy to a 1 MiB sender that cuts one connection after 1000 bytes.
    fn one_cut_after_1000() -> Proxy {
        let faults = Faults {
            cut_after: Some(1000),
            cuts: 1,
            ..Faults::default()
        };
        Proxy::start(sender(1 << 20), faults)
    }

    #[test]
    fn counts_and_cuts() {
        let proxy = one_cut_after_1000();
        assert_eq!(fetch(proxy.port), 1000, "the first connection is cut after 1000 bytes");
        assert_eq!(fetch(proxy.port), 1 << 20, "later ones pass whole");
        assert_eq!(proxy.cuts(), 1);
        assert_eq!(proxy.downstream(), 1000 + (1 << 20));
    }

    #[test]
    fn throttles_each_connection() {
        let faults = Faults {
            rate: Some(4 << 20),
            ..Faults::default()
        };
        let proxy = Proxy::start(sender(1 << 20), faults);
        let started = std::time::Instant::now();
        assert_eq!(fetch(proxy.port), 1 << 20);
        let took = started.elapsed().as_secs_f64();
        assert!((0.2..2.0).contains(&took), "1 MiB at 4 MiB/s took {took}s");
    }

    /// A server that keeps each client's connection open until the client closes it.
    fn holder() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        thread::spawn(move || {
            for mut c in listener.incoming().flatten() {
                thread::spawn(move || std::io::copy(&mut c, &mut std::io::sink()));
            }
        });
        port
    }

    #[test]
    fn counts_connections_open_at_once() {
        let proxy = Proxy::start(holder(), Faults::default());
        let held: Vec<_> = (0..3)
            .map(|_| TcpStream::connect(("127.0.0.1", proxy.port)).unwrap())
            .collect();
        while proxy.counters.connections.load(Ordering::Relaxed) < 3 {
            thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(proxy.peak_connections(), 3, "three were open at once");
        drop(held);
        let sequential = Proxy::start(sender(1000), Faults::default());
        for _ in 0..3 {
            fetch(sequential.port);
            thread::sleep(std::time::Duration::from_millis(50));
        }
        assert_eq!(sequential.peak_connections(), 1, "one after the other");
    }

    /// Connections open at the same time share the number of cuts: one cut in all.
    #[test]
    fn cuts_are_counted_across_concurrent_connections() {
        let proxy = one_cut_after_1000();
        let (mut a, mut b) = (
            TcpStream::connect(("127.0.0.1", proxy.port)).unwrap(),
            TcpStream::connect(("127.0.0.1", proxy.port)).unwrap(),
        );
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let _ = a.read_to_end(&mut got_a);
        let _ = b.read_to_end(&mut got_b);
        let mut sizes = [got_a.len(), got_b.len()];
        sizes.sort();
        assert_eq!(sizes, [1000, 1 << 20]);
        assert_eq!(proxy.cuts(), 1);
    }
}
