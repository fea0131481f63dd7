//! Limits that keep one device, or one address, from exhausting the server (issue 14, finding 8):
//! connections per device, and enrolment attempts per source address, whose refusals are
//! aggregated in the audit log instead of growing it without bound.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polyphony_core::DeviceId;

/// The most connections one device may hold at once. The app holds one live session and the CLI
/// opens one at a time; a device holding more is confused or hostile, and without this bound it
/// could take every slot of the server-wide limit and turn its colleagues away.
/// A new connection past the limit closes the device's oldest one: a laptop that slept or lost
/// signal mid-sync leaves connections the server sees only at their idle timeout, and its owner
/// must not be locked out by them.
pub const MAX_CONNECTIONS_PER_DEVICE: usize = 4;

/// Closes one connection (in the server, the connection's `close`).
pub type Closer = Box<dyn Fn() + Send + Sync>;

/// The most enrolment attempts one source address may make per [`ENROL_WINDOW`]. A team's
/// devices enrol a handful at a time, often from one NHS network address (a training day may
/// enrol a room of laptops behind one address within a minute).
pub const MAX_ENROLMENTS_PER_WINDOW: u32 = 60;
/// The window over which enrolment attempts are counted.
pub const ENROL_WINDOW: Duration = Duration::from_secs(60);
/// The most source addresses whose windows are remembered; older windows are forgotten first.
pub const MAX_SOURCES: usize = 4096;

/// What every connection shares for these limits.
pub struct Limits {
    /// Each device's open connections, oldest first.
    devices: Mutex<HashMap<DeviceId, Vec<(u64, Closer)>>>,
    next_slot: std::sync::atomic::AtomicU64,
    enrolments: Mutex<HashMap<IpAddr, Window>>,
    /// Each device's last access-list request.
    access_lists: Mutex<HashMap<DeviceId, Instant>>,
    /// Each device's offline reads in the current [`READS_WINDOW`]: its start and the count.
    reads: Mutex<HashMap<DeviceId, (Instant, usize)>>,
    /// Room for attachments' bytes in memory, over every connection, in MiB
    /// ([`crate::ServerConfig::attachment_memory_mib`]).
    pub attachment_room: std::sync::Arc<tokio::sync::Semaphore>,
    /// Each device's share of that room (a quarter of it, and at least one largest file), so one
    /// device moving many files, or not reading what it asked for, cannot hold all of it.
    device_rooms: Mutex<HashMap<DeviceId, std::sync::Arc<tokio::sync::Semaphore>>>,
    device_room_mib: usize,
    /// How long a file waits for room before it is refused as busy
    /// ([`crate::ServerConfig::attachment_room_wait_secs`]).
    pub room_wait: Duration,
    /// How long one file may take to move, all in
    /// ([`crate::ServerConfig::attachment_file_deadline_secs`]).
    pub file_deadline: Duration,
}

/// How long a file waits for room in memory, unless configured otherwise: 30 s.
pub const DEFAULT_ROOM_WAIT: Duration = Duration::from_secs(30);

/// How long one file may take to move, all in, unless configured otherwise: 20 MiB at 300 kbit/s.
pub const DEFAULT_FILE_DEADLINE: Duration = Duration::from_secs(600);

/// The default room for attachments' bytes in memory: 256 MiB, six 20 MiB files moving at once
/// (each takes room for two copies), many more small ones.
pub const DEFAULT_ATTACHMENT_MEMORY_MIB: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Limits::with_attachment_memory(DEFAULT_ATTACHMENT_MEMORY_MIB)
    }
}

impl Limits {
    /// Limits with `mib` MiB of room for attachments in memory (at least 40: one 20 MiB file,
    /// twice).
    pub fn with_attachment_memory(mib: usize) -> Limits {
        Limits::for_attachments(mib, DEFAULT_ROOM_WAIT, DEFAULT_FILE_DEADLINE)
    }

    /// Limits with `mib` MiB of room for attachments in memory, a file waiting `room_wait` for
    /// room and taking `file_deadline` at most to move. The wait is at least a second (0 would
    /// refuse every file the moment two move at once) and at most a day; the deadline is longer
    /// than a file can wait for room (twice the wait: its device's share, then the server's
    /// room) and five seconds more, so a file that only waits is refused as busy, never as too
    /// slow, and at most three days.
    pub fn for_attachments(mib: usize, room_wait: Duration, file_deadline: Duration) -> Limits {
        let mib = mib.max(40);
        // Bounded both ways: a day is far past any wait a person would sit through, and keeps
        // the arithmetic below from overflowing on a mistyped setting.
        let day = Duration::from_secs(24 * 60 * 60);
        let room_wait = room_wait.clamp(Duration::from_secs(1), day);
        let file_deadline = file_deadline
            .min(day * 3)
            .max(room_wait * 2 + Duration::from_secs(5));
        Limits {
            devices: Default::default(),
            next_slot: Default::default(),
            enrolments: Default::default(),
            access_lists: Default::default(),
            reads: Default::default(),
            attachment_room: std::sync::Arc::new(tokio::sync::Semaphore::new(mib)),
            device_rooms: Default::default(),
            device_room_mib: (mib / 4).max(40),
            room_wait,
            file_deadline,
        }
    }

    /// A device's share of the room for attachments in memory.
    pub fn device_room(&self, device: DeviceId) -> std::sync::Arc<tokio::sync::Semaphore> {
        let mut rooms = self.device_rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(device)
            .or_insert_with(|| {
                std::sync::Arc::new(tokio::sync::Semaphore::new(self.device_room_mib))
            })
            .clone()
    }
}

/// The shortest time between two access-list requests of one device, over all its connections.
pub const ACCESS_LIST_INTERVAL: Duration = Duration::from_secs(2);
/// The most offline reads one device may report per [`READS_WINDOW`], over all its connections:
/// a device offline for a month reads a few hundred times; more is a confused or hostile device
/// filling the audit log.
pub const MAX_READS_PER_WINDOW: usize = 10_000;
/// The window over which a device's offline reads are counted.
pub const READS_WINDOW: Duration = Duration::from_secs(3600);

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Window {
    start: Instant,
    attempts: u32,
    /// Admitted attempts that failed in this window.
    failures: u32,
    /// Attempts refused for their rate in this window.
    refused: u32,
}

impl Window {
    fn new(start: Instant) -> Self {
        Window {
            start,
            attempts: 0,
            failures: 0,
            refused: 0,
        }
    }
}

/// One of a device's open connections; dropping it frees the slot.
pub struct DeviceSlot {
    limits: Arc<Limits>,
    device: DeviceId,
    id: u64,
}

impl Drop for DeviceSlot {
    fn drop(&mut self) {
        let mut open = self
            .limits
            .devices
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(slots) = open.get_mut(&self.device) {
            slots.retain(|(id, _)| *id != self.id);
            if slots.is_empty() {
                open.remove(&self.device);
            }
        }
    }
}

/// The answer to an enrolment attempt's arrival.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Go on.
    Yes,
    /// Too many attempts from this address this window: refuse unread. `report` is the count
    /// of such refusals so far when it reaches a power of two (write one audit record saying
    /// so), so the log grows by a handful of records per address per minute, and the count it
    /// shows is never less than half the true one.
    TooMany {
        /// Refusals for the rate from this address in this window, when it is to be audited.
        report: Option<u32>,
    },
}

/// Whether `n` is one of the counts to report (1, 2, 4, 8, ...).
fn reported(n: u32) -> Option<u32> {
    n.is_power_of_two().then_some(n)
}

impl Limits {
    /// Take one of `device`'s connection slots for a connection that `close` closes. At the
    /// limit, the device's oldest connections are closed to make room; returns how many were.
    pub fn open_device(self: &Arc<Self>, device: DeviceId, close: Closer) -> (DeviceSlot, usize) {
        let id = self
            .next_slot
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut open = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        let slots = open.entry(device).or_default();
        let mut superseded = 0;
        while slots.len() >= MAX_CONNECTIONS_PER_DEVICE {
            let (_, oldest) = slots.remove(0);
            oldest();
            superseded += 1;
        }
        slots.push((id, close));
        let slot = DeviceSlot {
            limits: self.clone(),
            device,
            id,
        };
        (slot, superseded)
    }

    /// How many connections `device` holds.
    pub fn device_connections(&self, device: &DeviceId) -> usize {
        let open = self.devices.lock().unwrap_or_else(|p| p.into_inner());
        open.get(device).map_or(0, Vec::len)
    }

    /// May `device` have a case's access list now? At most one request per
    /// [`ACCESS_LIST_INTERVAL`], however many connections it opens.
    pub fn access_list_allowed(&self, device: DeviceId, now: Instant) -> bool {
        let mut map = self.access_lists.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&device) {
            Some(at) if now.duration_since(*at) < ACCESS_LIST_INTERVAL => false,
            _ => {
                map.insert(device, now);
                true
            }
        }
    }

    /// May `device` report `n` more offline reads now? Counted over all its connections.
    pub fn take_reads(&self, device: DeviceId, n: usize, now: Instant) -> bool {
        let mut map = self.reads.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(device).or_insert((now, 0));
        if now.duration_since(entry.0) >= READS_WINDOW {
            *entry = (now, 0);
        }
        if entry.1 + n > MAX_READS_PER_WINDOW {
            return false;
        }
        entry.1 += n;
        true
    }

    /// An enrolment attempt from `source` arrives at `now`.
    pub fn enrolment_attempt(&self, source: IpAddr, now: Instant) -> Admit {
        let mut map = self.enrolments.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SOURCES && !map.contains_key(&source) {
            map.retain(|_, w| now.duration_since(w.start) < ENROL_WINDOW);
            if map.len() >= MAX_SOURCES {
                // Still full of live windows: forget the oldest.
                if let Some(oldest) = map.iter().min_by_key(|(_, w)| w.start).map(|(ip, _)| *ip) {
                    map.remove(&oldest);
                }
            }
        }
        let w = map.entry(source).or_insert_with(|| Window::new(now));
        if now.duration_since(w.start) >= ENROL_WINDOW {
            *w = Window::new(now);
        }
        w.attempts += 1;
        if w.attempts > MAX_ENROLMENTS_PER_WINDOW {
            w.refused += 1;
            return Admit::TooMany {
                report: reported(w.refused),
            };
        }
        Admit::Yes
    }

    /// An admitted enrolment attempt from `source` failed: the count of failures from it in
    /// this window when that reaches a power of two (audit it then, with the count), else none.
    pub fn enrolment_failed(&self, source: IpAddr) -> Option<u32> {
        let mut map = self.enrolments.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = map.get_mut(&source) else {
            return Some(1);
        };
        w.failures += 1;
        reported(w.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attachment waits as configured, bounded: 0 is a second (and its deadline past twice
    /// it), the largest number a setting can hold is a day (and three days), with no overflow.
    #[test]
    fn attachment_waits_are_bounded_both_ways() {
        let zero = Limits::for_attachments(40, Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.room_wait, Duration::from_secs(1));
        assert_eq!(zero.file_deadline, Duration::from_secs(7));
        let huge = Limits::for_attachments(
            40,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(u64::MAX),
        );
        assert_eq!(huge.room_wait, Duration::from_secs(24 * 60 * 60));
        assert_eq!(huge.file_deadline, Duration::from_secs(3 * 24 * 60 * 60));
        let set = Limits::for_attachments(40, Duration::from_secs(2), Duration::from_secs(15));
        assert_eq!(
            (set.room_wait, set.file_deadline),
            (Duration::from_secs(2), Duration::from_secs(15))
        );
    }

    #[test]
    fn a_device_holds_at_most_its_slots_and_a_new_connection_closes_its_oldest() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let limits = Arc::new(Limits::default());
        let d = DeviceId::random();
        let n = MAX_CONNECTIONS_PER_DEVICE + 2;
        let closed: Arc<Vec<AtomicUsize>> = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
        let closer = |i: usize| -> Closer {
            let closed = closed.clone();
            Box::new(move || {
                closed[i].fetch_add(1, Ordering::Relaxed);
            })
        };
        let mut slots = Vec::new();
        for i in 0..n {
            let (slot, superseded) = limits.open_device(d, closer(i));
            assert_eq!(
                superseded,
                usize::from(i >= MAX_CONNECTIONS_PER_DEVICE),
                "connection {i}"
            );
            slots.push(slot);
        }
        assert_eq!(limits.device_connections(&d), MAX_CONNECTIONS_PER_DEVICE);
        let counts: Vec<usize> = closed.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(&counts[..2], &[1, 1], "the two oldest closed");
        assert!(counts[2..].iter().all(|c| *c == 0), "the rest kept");
        let (_other, superseded) = limits.open_device(DeviceId::random(), Box::new(|| {}));
        assert_eq!(superseded, 0, "another device is not held up");
        drop(slots);
        assert_eq!(limits.device_connections(&d), 0, "closed slots come back");
    }

    #[test]
    fn enrolment_attempts_are_bounded_per_window_and_counted_in_a_few_records() {
        let limits = Limits::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let t0 = Instant::now();
        let mut audited = Vec::new();
        for i in 0..MAX_ENROLMENTS_PER_WINDOW {
            assert_eq!(limits.enrolment_attempt(ip, t0), Admit::Yes, "attempt {i}");
            audited.extend(limits.enrolment_failed(ip));
        }
        assert_eq!(
            audited,
            vec![1, 2, 4, 8, 16, 32],
            "failures audited at powers of two"
        );
        let mut refusals = Vec::new();
        for _ in 0..100 {
            match limits.enrolment_attempt(ip, t0) {
                Admit::TooMany { report } => refusals.extend(report),
                Admit::Yes => panic!("admitted past the limit"),
            }
        }
        assert_eq!(refusals, vec![1, 2, 4, 8, 16, 32, 64]);
        // Another address is not affected; past the window the address is admitted again.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert_eq!(limits.enrolment_attempt(other, t0), Admit::Yes);
        assert_eq!(limits.enrolment_attempt(ip, t0 + ENROL_WINDOW), Admit::Yes);
        assert_eq!(
            limits.enrolment_failed(ip),
            Some(1),
            "a new window counts afresh"
        );
    }

    #[test]
    fn access_lists_and_offline_reads_are_limited_per_device_not_per_connection() {
        let limits = Limits::default();
        let (d, other) = (DeviceId::random(), DeviceId::random());
        let t0 = Instant::now();
        assert!(limits.access_list_allowed(d, t0));
        assert!(!limits.access_list_allowed(d, t0 + Duration::from_millis(500)));
        assert!(limits.access_list_allowed(other, t0));
        assert!(limits.access_list_allowed(d, t0 + ACCESS_LIST_INTERVAL));
        assert!(limits.take_reads(d, MAX_READS_PER_WINDOW, t0));
        assert!(
            !limits.take_reads(d, 1, t0 + Duration::from_secs(1)),
            "one past the window's bound"
        );
        assert!(limits.take_reads(other, 1, t0));
        assert!(limits.take_reads(d, 1, t0 + READS_WINDOW), "a new window");
    }

    #[test]
    fn the_sources_remembered_are_bounded() {
        let limits = Limits::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + i));
            limits.enrolment_attempt(ip, t0);
        }
        assert!(limits.enrolments.lock().unwrap().len() <= MAX_SOURCES);
    }
}
