//! Traffic between test namespaces, to measure what a fault does: UDP round trips, UDP
//! datagram counts and TCP bulk throughput. For root tests and benchmarks (with
//! [`crate::agent::testnet`]); the agent itself never uses it.
//!
//! Sockets are created on a thread inside the namespace ([`Netns::run`]) and keep that
//! namespace, so the rest runs on ordinary threads.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agent::netns::Netns;

const POLL: Duration = Duration::from_millis(50);

/// A background thread that stops and is joined on drop.
#[derive(Debug)]
struct Background {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    fn spawn(work: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        Self {
            stop,
            thread: Some(std::thread::spawn(move || work(flag))),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Echoes every UDP datagram back to its sender.
#[derive(Debug)]
pub struct UdpEcho {
    _thread: Background,
}

impl UdpEcho {
    pub fn start(ns: &Netns, addr: SocketAddr) -> io::Result<Self> {
        let socket = ns.run(|| UdpSocket::bind(addr))??;
        socket.set_read_timeout(Some(POLL))?;
        Ok(Self {
            _thread: Background::spawn(move |stop| {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    if let Ok((len, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..len], from);
                    }
                }
            }),
        })
    }
}

/// Sends `count` UDP requests from `ns` to an [`UdpEcho`] at `server`, one every `interval`,
/// and returns each one's round-trip time (`None`: no reply within `timeout` after the last
/// request).
pub fn udp_rtts(
    ns: &Netns,
    server: SocketAddr,
    count: usize,
    interval: Duration,
    timeout: Duration,
) -> io::Result<Vec<Option<Duration>>> {
    let socket = ns.run(|| UdpSocket::bind(("0.0.0.0", 0)))??;
    socket.connect(server)?;
    socket.set_read_timeout(Some(POLL))?;
    let sender = socket.try_clone()?;
    let epoch = Instant::now();
    let sending = std::thread::spawn(move || -> io::Result<()> {
        for seq in 0..count {
            let due = epoch + interval * u32::try_from(seq).expect("small count");
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let sent = u64::try_from(epoch.elapsed().as_nanos()).expect("short test");
            let mut payload = [0u8; 16];
            payload[..8].copy_from_slice(&(seq as u64).to_be_bytes());
            payload[8..].copy_from_slice(&sent.to_be_bytes());
            sender.send(&payload)?;
        }
        Ok(())
    });
    let mut rtts = vec![None; count];
    let deadline = epoch + interval * u32::try_from(count).expect("small count") + timeout;
    let mut buf = [0u8; 64];
    let mut received = 0;
    while received < count && Instant::now() < deadline {
        let Ok(len) = socket.recv(&mut buf) else {
            continue;
        };
        let now = epoch.elapsed();
        if len < 16 {
            continue;
        }
        let seq = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
        let sent = Duration::from_nanos(u64::from_be_bytes(buf[8..16].try_into().expect("8")));
        if let Some(slot) = usize::try_from(seq).ok().and_then(|s| rtts.get_mut(s))
            && slot.is_none()
        {
            *slot = Some(now.saturating_sub(sent));
            received += 1;
        }
    }
    sending
        .join()
        .map_err(|_| io::Error::other("sender panicked"))??;
    Ok(rtts)
}

/// Counts UDP datagrams arriving at an address.
#[derive(Debug)]
pub struct UdpSink {
    received: Arc<AtomicU64>,
    _thread: Background,
}

impl UdpSink {
    pub fn start(ns: &Netns, addr: SocketAddr) -> io::Result<Self> {
        let socket = ns.run(|| UdpSocket::bind(addr))??;
        socket.set_read_timeout(Some(POLL))?;
        // Delayed packets arrive in bursts: room for them, so the sink itself loses none.
        let _ = nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &(16 << 20),
        );
        let received = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&received);
        Ok(Self {
            received,
            _thread: Background::spawn(move |stop| {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::SeqCst) {
                    if socket.recv(&mut buf).is_ok() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }),
        })
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

/// Sends `count` small UDP datagrams from `ns` to `dest`, one every `interval`.
pub fn udp_send(ns: &Netns, dest: SocketAddr, count: usize, interval: Duration) -> io::Result<()> {
    let socket = ns.run(|| UdpSocket::bind(("0.0.0.0", 0)))??;
    let start = Instant::now();
    for seq in 0..count {
        let due = start + interval * u32::try_from(seq).expect("small count");
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        socket.send_to(&(seq as u64).to_be_bytes(), dest)?;
    }
    Ok(())
}

/// Bulk TCP transfer from `client` to a listener in `server` at `addr` for `duration`; returns
/// the receiver's goodput in Mbit/s (bytes received over the transfer time).
pub fn tcp_throughput(
    client: &Netns,
    server: &Netns,
    addr: SocketAddr,
    duration: Duration,
) -> io::Result<f64> {
    let listener = server.run(|| TcpListener::bind(addr))??;
    let receiving = std::thread::spawn(move || -> io::Result<(u64, Duration)> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        let start = Instant::now();
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok((total, start.elapsed())),
                n => total += n as u64,
            }
        }
    });
    let mut stream =
        client.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(10)))??;
    let chunk = vec![0x5au8; 1 << 16];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream.write_all(&chunk)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let (bytes, elapsed) = receiving
        .join()
        .map_err(|_| io::Error::other("receiver panicked"))??;
    Ok(bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6)
}

/// The `q`-quantile (0.0-1.0) of some durations, nearest rank.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
