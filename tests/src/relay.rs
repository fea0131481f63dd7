//! A bad network on loopback: a UDP relay that drops, delays, duplicates and reorders datagrams.
//!
//! QUIC promises to deliver a sync over a lossy, jittery link (it retransmits, reorders and
//! discards duplicates itself); the relay is how the fault tests hold it to that. It sits between
//! devices and the server: a device enrolled through the relay's address sends every datagram to
//! it, and the relay forwards each one (or not) through its own socket per device, so the server
//! still sees one address per device. Each direction is impaired independently with a seeded RNG;
//! every decision is counted so a test can say how many faults it injected.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// How the relay mistreats datagrams (in each direction, independently).
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// The chance a datagram is dropped.
    pub loss: f64,
    /// The chance a datagram that gets through is delivered twice.
    pub duplicate: f64,
    /// Each copy is held for a uniformly random time up to this long, so datagrams overtake each
    /// other (reordering) as well as arriving late.
    pub max_delay: Duration,
    /// The RNG seed, so a failing run can be replayed (as far as the scheduler allows).
    pub seed: u64,
    /// Drop everything the server sends back (a client whose handshakes never complete).
    pub black_hole_replies: bool,
}

impl Impairment {
    /// A relay that forwards devices' datagrams untouched and drops every reply: each
    /// connection through it stays half-open on the server until it times out.
    pub fn black_hole() -> Impairment {
        Impairment {
            loss: 0.0,
            duplicate: 0.0,
            max_delay: Duration::ZERO,
            seed: 0,
            black_hole_replies: true,
        }
    }
}

/// What the relay did, so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayCounts {
    /// Datagrams received, both directions.
    pub datagrams: u64,
    /// Dropped.
    pub dropped: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Delivered after a later datagram of the same direction.
    pub reordered: u64,
    /// Copies delivered (after their delay).
    pub delivered: u64,
}

impl RelayCounts {
    /// Faults injected: drops, duplicates and reorderings.
    pub fn faults(&self) -> u64 {
        self.dropped + self.duplicated + self.reordered
    }
}

#[derive(Default)]
struct Stats {
    datagrams: AtomicU64,
    dropped: AtomicU64,
    duplicated: AtomicU64,
    reordered: AtomicU64,
    delivered: AtomicU64,
}

/// One direction of traffic: numbers datagrams as they arrive, to notice reordering on delivery.
#[derive(Default)]
struct Direction {
    next: AtomicU64,
    last_delivered: AtomicU64,
}

struct Shared {
    impairment: Impairment,
    silent: std::sync::atomic::AtomicBool,
    rng: Mutex<StdRng>,
    stats: Stats,
}

impl Shared {
    /// Decide a datagram's fate and schedule its copies (none, one or two) for `to` via `socket`.
    fn forward(
        self: &Arc<Self>,
        dir: &Arc<Direction>,
        socket: &Arc<UdpSocket>,
        to: Option<SocketAddr>,
        bytes: &[u8],
    ) {
        self.stats.datagrams.fetch_add(1, Ordering::Relaxed);
        if self.silent.load(Ordering::Relaxed) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let seq = dir.next.fetch_add(1, Ordering::Relaxed) + 1;
        let delays: Vec<Duration> = {
            let mut rng = self.rng.lock().expect("relay rng");
            if rng.random_bool(self.impairment.loss) {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let copies = if rng.random_bool(self.impairment.duplicate) {
                self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
                2
            } else {
                1
            };
            let max = self.impairment.max_delay.as_micros() as u64;
            (0..copies)
                .map(|_| Duration::from_micros(rng.random_range(0..=max)))
                .collect()
        };
        for delay in delays {
            let (dir, socket, bytes) = (dir.clone(), socket.clone(), bytes.to_vec());
            let shared = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let stats = &shared.stats;
                if dir.last_delivered.fetch_max(seq, Ordering::Relaxed) > seq {
                    stats.reordered.fetch_add(1, Ordering::Relaxed);
                }
                let sent = match to {
                    Some(addr) => socket.send_to(&bytes, addr).await,
                    None => socket.send(&bytes).await,
                };
                if sent.is_ok() {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
}

/// A lossy relay in front of a server. Dropping it stops forwarding.
pub struct LossyRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl LossyRelay {
    /// Listen on a free loopback port and forward to `upstream`, impaired as `impairment` says.
    pub async fn start(upstream: SocketAddr, impairment: Impairment) -> Result<LossyRelay> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let shared = Arc::new(Shared {
            impairment,
            rng: Mutex::new(StdRng::seed_from_u64(impairment.seed)),
            silent: std::sync::atomic::AtomicBool::new(false),
            stats: Stats::default(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(front_loop(front, upstream, shared.clone()));
        Ok(LossyRelay {
            addr,
            shared,
            tasks,
        })
    }

    /// Where devices should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on forward nothing either way, keeping the sockets open: the devices behind the
    /// relay vanish without a word (no close, no ICMP error), as a hostile host would.
    pub fn go_silent(&self) {
        self.shared.silent.store(true, Ordering::Relaxed);
    }

    /// What the relay has done so far.
    pub fn counts(&self) -> RelayCounts {
        let s = &self.shared.stats;
        RelayCounts {
            datagrams: s.datagrams.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            duplicated: s.duplicated.load(Ordering::Relaxed),
            reordered: s.reordered.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Device → server: one upstream socket per device address, each with a task carrying the
/// server's answers back.
async fn front_loop(front: Arc<UdpSocket>, upstream: SocketAddr, shared: Arc<Shared>) {
    let mut devices: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let to_server = Arc::new(Direction::default());
    let mut back_tasks = JoinSet::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = front.recv_from(&mut buf).await else {
            return;
        };
        let up = match devices.get(&from) {
            Some(s) => s.clone(),
            None => {
                let Ok(sock) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if sock.connect(upstream).await.is_err() {
                    continue;
                }
                let sock = Arc::new(sock);
                devices.insert(from, sock.clone());
                back_tasks.spawn(back_loop(sock.clone(), front.clone(), from, shared.clone()));
                sock
            }
        };
        shared.forward(&to_server, &up, None, &buf[..n]);
    }
}

/// Server → one device.
async fn back_loop(
    up: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    device: SocketAddr,
    shared: Arc<Shared>,
) {
    let to_device = Arc::new(Direction::default());
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = up.recv(&mut buf).await {
        if shared.impairment.black_hole_replies {
            shared.stats.datagrams.fetch_add(1, Ordering::Relaxed);
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        shared.forward(&to_device, &front, Some(device), &buf[..n]);
    }
}
