//! The workloads of issue 8, each returning one JSON result.
//!
//! - A, [`first_sync`]: a caseload goes from one device to the server, then to a fresh second device.
//! - B, [`reconnect`]: end of day, some cases edited offline, one reconnect until all acknowledged.
//! - C, [`morning`]: many devices connect at once, each with a few edited cases.
//! - D, [`memory`]: the server's memory and disk holding many cases, idle and under C.
//!
//! Setting up (enrolling devices, writing the cases, the first sync before B and C) is not timed; the
//! timed part is exactly what the user waits for. Each workload also runs the in-process lower bound
//! ([`crate::lower_bound`]) on the same documents, after the timed part so the two do not compete
//! for the two cores.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::caseload::Seed;
use crate::device::Device;
use crate::lower_bound::{self, Floor, Pair};
use crate::memory::{process_cpu_s, rss_bytes, PeakRss};
use crate::server::BenchServer;

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    round2(a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// CPU seconds used by the server and by this process (the devices) over a timed part.
struct Cpu {
    server: Option<f64>,
    devices: Option<f64>,
}

impl Cpu {
    fn start(server: &BenchServer) -> Cpu {
        Cpu {
            server: server.pid().and_then(process_cpu_s),
            devices: process_cpu_s(std::process::id()),
        }
    }

    fn finish(self, server: &BenchServer) -> Cpu {
        let since = |now: Option<f64>, then: Option<f64>| Some(round2(now? - then?));
        Cpu {
            server: since(server.pid().and_then(process_cpu_s), self.server),
            devices: since(process_cpu_s(std::process::id()), self.devices),
        }
    }

    /// Fields for the result: CPU of both sides, and its ratio to the floor's CPU (both sides' work
    /// done on one thread), which stays meaningful when neighbours make wall times noisy.
    fn fields(&self, floor: &Floor, out: &mut Value) {
        out["server_cpu_s"] = json!(self.server);
        out["devices_cpu_s"] = json!(self.devices);
        out["lower_bound_cpu_s"] = json!(round2(floor.cpu_s));
        if let (Some(s), Some(d)) = (self.server, self.devices) {
            out["cpu_ratio_to_lower_bound"] = json!(round2((s + d) / floor.cpu_s.max(1e-9)));
        }
    }
}

/// A: the first sync of `cases` cases to the server, then to a fresh second device of the same
/// practitioner.
pub async fn first_sync(server: &BenchServer, cases: usize, seed: u64) -> Result<Value> {
    let mut seed = Seed::new(seed);
    server.practitioner("Sam Adebayo", "North").await?;
    let mut a = server.device("Sam Adebayo").await?;
    let mut b = server.device("Sam Adebayo").await?;
    let generated = Instant::now();
    a.create_cases(cases, &mut seed)?;
    let generated = generated.elapsed();
    let addr = server.addr.to_string();

    let rss_before = server.pid().and_then(rss_bytes);
    let peak = PeakRss::start(server.pid());
    let cpu = Cpu::start(server);
    let up = a.sync(&addr).await?;
    if a.unacknowledged() != 0 {
        bail!(
            "{} cases not acknowledged after the upload",
            a.unacknowledged()
        );
    }
    let down = b.sync(&addr).await?;
    let cpu = cpu.finish(server);
    let rss_peak = peak.finish();
    check_same(&mut a, &mut b)?;
    let ours = up.elapsed + down.elapsed;

    let floor = lower_bound::first_sync(a.docs.values())?;
    let mut out = json!({
        "workload": "A",
        "name": "first-sync",
        "cases": cases,
        "upload_s": secs(up.elapsed),
        "download_s": secs(down.elapsed),
        "total_s": secs(ours),
        "lower_bound_s": secs(floor.wall),
        "ratio_to_lower_bound": ratio(ours, floor.wall),
        "downloaded_bytes": down.received_bytes,
        "server_rss_before_bytes": rss_before,
        "server_rss_peak_bytes": rss_peak,
        "server_disk_bytes": server.disk_bytes(),
        "generate_s": secs(generated),
    });
    cpu.fields(&floor, &mut out);
    Ok(out)
}

fn check_same(a: &mut Device, b: &mut Device) -> Result<()> {
    if a.docs.len() != b.docs.len() {
        bail!(
            "the second device holds {} cases, the first {}",
            b.docs.len(),
            a.docs.len()
        );
    }
    for (id, doc) in a.docs.iter_mut() {
        let Some(other) = b.docs.get_mut(id) else {
            bail!("case {id} did not reach the second device");
        };
        if doc.get_heads() != other.get_heads() {
            bail!("case {id} differs on the second device");
        }
    }
    Ok(())
}

/// B: `cases` cases synced; `edited` of them edited offline; time one reconnect until every case is
/// acknowledged.
pub async fn reconnect(
    server: &BenchServer,
    cases: usize,
    edited: usize,
    seed: u64,
) -> Result<Value> {
    let mut seed = Seed::new(seed);
    server.practitioner("Kit Morgan", "South").await?;
    let mut a = server.device("Kit Morgan").await?;
    a.create_cases(cases, &mut seed)?;
    let addr = server.addr.to_string();
    a.sync(&addr).await?;
    let mut pairs: Vec<Pair> = a.docs.values().map(Pair::synced).collect::<Result<_>>()?;
    let ids = a.edit_cases(edited, &mut seed)?;
    for (pair, (id, doc)) in pairs.iter_mut().zip(a.docs.iter()) {
        if ids.contains(id) {
            pair.device = doc.clone();
        }
    }
    if a.unacknowledged() != edited {
        bail!(
            "expected {edited} unacknowledged cases, found {}",
            a.unacknowledged()
        );
    }

    let peak = PeakRss::start(server.pid());
    let cpu = Cpu::start(server);
    let out = a.sync(&addr).await?;
    let cpu = cpu.finish(server);
    let rss_peak = peak.finish();
    if a.unacknowledged() != 0 {
        bail!(
            "{} cases not acknowledged after the reconnect",
            a.unacknowledged()
        );
    }
    let floor = lower_bound::reconnect(&mut pairs)?;
    let mut result = json!({
        "workload": "B",
        "name": "reconnect",
        "cases": cases,
        "edited": edited,
        "total_s": secs(out.elapsed),
        "lower_bound_s": secs(floor.wall),
        "ratio_to_lower_bound": ratio(out.elapsed, floor.wall),
        "server_rss_peak_bytes": rss_peak,
    });
    cpu.fields(&floor, &mut result);
    Ok(result)
}

/// Devices ready for the morning: enrolled, their cases synced yesterday, some edited since.
pub struct Morning {
    devices: Vec<Device>,
    pairs: Vec<Pair>,
    setup: Duration,
}

/// Prepare C: `devices` practitioners, each alone in a team of their own, each with one device
/// holding `cases` synced cases, `edited` of them edited offline since. Enrolment and the first
/// syncs run `parallel` at a time.
pub async fn morning_setup(
    server: &BenchServer,
    devices: usize,
    cases: usize,
    edited: usize,
    parallel: usize,
    seed: u64,
) -> Result<Morning> {
    let started = Instant::now();
    let addr = server.addr.to_string();
    let mut ready = Vec::with_capacity(devices);
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < devices {
        let mut batch = JoinSet::new();
        for j in i..(i + parallel).min(devices) {
            let name = format!("Practitioner {j:04}");
            server.practitioner(&name, &format!("Team {j:04}")).await?;
            let mut d = server.device(&name).await?;
            let addr = addr.clone();
            batch.spawn(async move {
                let mut seed = Seed::new(seed + j as u64);
                d.create_cases(cases, &mut seed)?;
                d.sync(&addr).await?;
                let pairs: Vec<Pair> = d.docs.values().map(Pair::synced).collect::<Result<_>>()?;
                let ids = d.edit_cases(edited, &mut seed)?;
                let mut pairs = pairs;
                for (pair, (id, doc)) in pairs.iter_mut().zip(d.docs.iter()) {
                    if ids.contains(id) {
                        pair.device = doc.clone();
                    }
                }
                anyhow::Ok((d, pairs))
            });
        }
        while let Some(r) = batch.join_next().await {
            let (d, p) = r??;
            ready.push(d);
            pairs.extend(p);
        }
        i += parallel;
    }
    Ok(Morning {
        devices: ready,
        pairs,
        setup: started.elapsed(),
    })
}

/// How long one device's morning sync may take before it counts as failed.
pub const DEVICE_TIMEOUT: Duration = Duration::from_secs(180);

/// C: every prepared device connects at once; time each one until its cases are acknowledged.
pub async fn morning(server: &BenchServer, m: Morning) -> Result<Value> {
    let Morning {
        devices,
        mut pairs,
        setup,
    } = m;
    let n = devices.len();
    let edited_cases: usize = pairs.len();
    let addr = server.addr.to_string();
    let peak = PeakRss::start(server.pid());
    let cpu = Cpu::start(server);
    let started = Instant::now();
    let mut all = JoinSet::new();
    for mut d in devices {
        let addr = addr.clone();
        all.spawn(async move {
            // Bounded: a device whose session has not ended by then counts as not acknowledged.
            let r = match tokio::time::timeout(DEVICE_TIMEOUT, d.sync(&addr)).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
                    "the session had not ended after {} s",
                    DEVICE_TIMEOUT.as_secs()
                )),
            };
            let unacked = d.unacknowledged();
            (r, unacked)
        });
    }
    let mut times = Vec::with_capacity(n);
    let mut failed = Vec::new();
    let mut unacknowledged = 0;
    while let Some(r) = all.join_next().await {
        let (r, unacked) = r?;
        unacknowledged += unacked;
        match r {
            Ok(o) => times.push(o.elapsed),
            Err(e) => failed.push(e.to_string()),
        }
    }
    let wall = started.elapsed();
    let cpu = cpu.finish(server);
    let rss_peak = peak.finish();
    times.sort();
    let pct = |p: f64| -> f64 {
        if times.is_empty() {
            return 0.0;
        }
        let i = ((p * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        secs(times[i])
    };
    let floor = lower_bound::reconnect(&mut pairs)?;
    failed.sort();
    failed.dedup();
    let mut result = json!({
        "workload": "C",
        "name": "morning",
        "devices": n,
        "cases": edited_cases,
        "acknowledged_devices": times.len(),
        "failed_devices": n - times.len(),
        "failures": failed,
        "unacknowledged_cases": unacknowledged,
        "wall_s": secs(wall),
        "p50_s": pct(0.50),
        "p99_s": pct(0.99),
        "max_s": pct(1.0),
        "lower_bound_s": secs(floor.wall),
        "ratio_to_lower_bound": ratio(wall, floor.wall),
        "server_rss_peak_bytes": rss_peak,
        "setup_s": secs(setup),
    });
    cpu.fields(&floor, &mut result);
    Ok(result)
}

/// The server's resident memory once it has been idle long enough to close every open case
/// (its default `cache_idle_secs`, plus its sweep), without a restart.
async fn idle_rss(pid: u32) -> Option<u64> {
    let idle = polyphony_server::config::ServerConfig::default().cache_idle_secs;
    eprintln!(
        "  waiting {} s for the server to close idle cases",
        idle + 20
    );
    tokio::time::sleep(Duration::from_secs(idle + 20)).await;
    rss_bytes(pid)
}

/// D: fill the server with `cases` cases (uploaded by devices of `per_device` cases each, each in a
/// team of its own), read its memory and disk, restart it and read its idle memory, then run C
/// (`morning_devices` devices) against it and read its peak.
pub async fn memory(
    server: &mut BenchServer,
    cases: usize,
    per_device: usize,
    morning_devices: usize,
    seed: u64,
) -> Result<Value> {
    if server.pid().is_none() {
        bail!("memory figures need the server in its own process (the default, --server child)");
    }
    let addr = server.addr.to_string();
    let started = Instant::now();
    let mut stored = 0;
    let mut k = 0;
    while stored < cases {
        let n = per_device.min(cases - stored);
        let name = format!("Archive {k:04}");
        server
            .practitioner(&name, &format!("Archive team {k:04}"))
            .await?;
        let mut d = server.device(&name).await?;
        let mut s = Seed::new(seed + 1_000_000 + k as u64);
        d.create_cases(n, &mut s)?;
        d.sync(&addr).await?;
        stored += n;
        k += 1;
        eprintln!(
            "  stored {stored} of {cases} cases ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let fill = started.elapsed();
    let pid = server.pid().expect("checked above");
    let rss_after_fill = rss_bytes(pid);
    let disk = server.disk_bytes();
    let rss_idle_after_fill = idle_rss(pid).await;
    server.restart().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = server.pid().expect("restarted");
    let rss_idle = rss_bytes(pid);

    let m = morning_setup(server, morning_devices, 20, 5, 8, seed).await?;
    let rss_before_c = rss_bytes(pid);
    let c = morning(server, m).await?;
    let rss_idle_after_c = idle_rss(pid).await;
    Ok(json!({
        "workload": "D",
        "name": "memory",
        "cases": cases,
        "fill_s": secs(fill),
        "server_disk_bytes": disk,
        "server_rss_after_fill_bytes": rss_after_fill,
        "server_rss_idle_after_fill_bytes": rss_idle_after_fill,
        "server_rss_idle_bytes": rss_idle,
        "server_rss_idle_after_c_bytes": rss_idle_after_c,
        "cache_idle_secs": polyphony_server::config::ServerConfig::default().cache_idle_secs,
        "server_rss_before_c_bytes": rss_before_c,
        "server_rss_peak_under_c_bytes": c["server_rss_peak_bytes"],
        "server_disk_after_c_bytes": server.disk_bytes(),
        "morning": c,
    }))
}
