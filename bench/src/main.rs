//! `polyphony-load`: run one benchmark workload and print its result as one JSON line (stdout) and a
//! summary (stderr). See `docs/BENCHMARKS.md` for the commands behind every published number.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use polyphony_bench::memory::mib;
use polyphony_bench::server::{default_server_bin, BenchServer, ServerSpec};
use polyphony_bench::workload;
use serde_json::Value;

/// Load generator for the Polyphony borough server.
#[derive(Debug, Parser)]
#[command(name = "polyphony-load", version, about)]
struct Cli {
    /// Where the server runs: a child process (memory measurable), or inside this process.
    #[arg(long, value_enum, default_value_t = Where::Child, global = true)]
    server: Where,
    /// The server binary for `--server child` [default: polyphony-server beside this binary].
    #[arg(long, global = true, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Use a server already running at this address instead of starting one (needs --target-data).
    #[arg(long, global = true, value_name = "ADDR", requires = "target_data")]
    target: Option<SocketAddr>,
    /// The data directory of the --target server (its admin socket is there).
    #[arg(long, global = true, value_name = "DIR")]
    target_data: Option<PathBuf>,
    /// The process id of the --target server, for memory figures.
    #[arg(long, global = true, value_name = "PID")]
    target_pid: Option<u32>,
    /// Open cases the server keeps in memory [default: the server's own default].
    #[arg(long, global = true)]
    cache_cases: Option<usize>,
    /// Seed for the generated documents.
    #[arg(long, global = true, default_value_t = 8)]
    seed: u64,
    /// Also append the JSON result to this file.
    #[arg(long, global = true, value_name = "FILE")]
    json_out: Option<PathBuf>,
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Where {
    Child,
    InProcess,
}

#[derive(Debug, Subcommand)]
enum Workload {
    /// A: first sync of a caseload to the server, then to a fresh second device.
    FirstSync {
        #[arg(long, default_value_t = 1000)]
        cases: usize,
    },
    /// B: end-of-day reconnect with some cases edited offline.
    Reconnect {
        #[arg(long, default_value_t = 1000)]
        cases: usize,
        #[arg(long, default_value_t = 100)]
        edited: usize,
    },
    /// C: a borough's morning: many devices connect at once.
    Morning {
        #[arg(long, default_value_t = 200)]
        devices: usize,
        #[arg(long, default_value_t = 20)]
        cases: usize,
        #[arg(long, default_value_t = 5)]
        edited: usize,
        /// Devices set up (enrolled, first sync) at a time before the timed part.
        #[arg(long, default_value_t = 8)]
        setup_parallel: usize,
    },
    /// D: server memory and disk holding many cases, idle and under C.
    Memory {
        #[arg(long, default_value_t = 50_000)]
        cases: usize,
        /// Cases uploaded per device while filling.
        #[arg(long, default_value_t = 1000)]
        per_device: usize,
        /// Devices in the morning load run against the full server.
        #[arg(long, default_value_t = 200)]
        devices: usize,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let spec = match (&cli.target, &cli.target_data, cli.server) {
        (Some(addr), Some(data), _) => ServerSpec::Existing {
            addr: *addr,
            data: data.clone(),
            pid: cli.target_pid,
        },
        (_, _, Where::InProcess) => ServerSpec::InProcess,
        (_, _, Where::Child) => ServerSpec::Child {
            bin: cli.server_bin.clone().unwrap_or_else(default_server_bin),
        },
    };
    let mut server = BenchServer::start(spec, cli.cache_cases).await?;
    let result = match cli.workload {
        Workload::FirstSync { cases } => workload::first_sync(&server, cases, cli.seed).await,
        Workload::Reconnect { cases, edited } => {
            workload::reconnect(&server, cases, edited, cli.seed).await
        }
        Workload::Morning {
            devices,
            cases,
            edited,
            setup_parallel,
        } => {
            let m =
                workload::morning_setup(&server, devices, cases, edited, setup_parallel, cli.seed)
                    .await?;
            workload::morning(&server, m).await
        }
        Workload::Memory {
            cases,
            per_device,
            devices,
        } => workload::memory(&mut server, cases, per_device, devices, cli.seed).await,
    };
    server.stop().await;
    let mut result = result?;
    result["server"] = Value::from(format!("{:?}", cli.server).to_lowercase());
    result["machine"] = Value::from(machine());
    let line = serde_json::to_string(&result)?;
    println!("{line}");
    if let Some(path) = &cli.json_out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{line}")?;
    }
    eprintln!("{}", summary(&result));
    Ok(())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {}", std::env::consts::ARCH)
}

fn summary(r: &Value) -> String {
    let line = headline(r);
    match r.get("cpu_ratio_to_lower_bound") {
        Some(x) => format!(
            "{line}\n  CPU: server {} s + devices {} s; lower bound {} s (x{x})",
            r["server_cpu_s"], r["devices_cpu_s"], r["lower_bound_cpu_s"]
        ),
        None => line,
    }
}

fn headline(r: &Value) -> String {
    let mb = |k: &str| {
        r[k].as_u64()
            .map_or("-".into(), |b| format!("{:.0} MiB", mib(b)))
    };
    match r["workload"].as_str() {
        Some("A") => format!(
            "A first sync, {} cases: upload {} s + download {} s = {} s; lower bound {} s (x{}); server peak {}",
            r["cases"], r["upload_s"], r["download_s"], r["total_s"], r["lower_bound_s"],
            r["ratio_to_lower_bound"], mb("server_rss_peak_bytes")
        ),
        Some("B") => format!(
            "B reconnect, {} of {} cases edited: {} s until all acknowledged; lower bound {} s (x{}); server peak {}",
            r["edited"], r["cases"], r["total_s"], r["lower_bound_s"], r["ratio_to_lower_bound"],
            mb("server_rss_peak_bytes")
        ),
        Some("C") => format!(
            "C morning, {} devices: {} acknowledged, {} failed; wall {} s, p50 {} s, p99 {} s, max {} s; lower bound {} s; server peak {}",
            r["devices"], r["acknowledged_devices"], r["failed_devices"], r["wall_s"], r["p50_s"],
            r["p99_s"], r["max_s"], r["lower_bound_s"], mb("server_rss_peak_bytes")
        ),
        Some("D") => format!(
            "D memory, {} cases: disk {}, RSS after filling {}, idle after filling {}, idle after restart {}, peak under C {}, idle after C {}",
            r["cases"], mb("server_disk_bytes"), mb("server_rss_after_fill_bytes"),
            mb("server_rss_idle_after_fill_bytes"), mb("server_rss_idle_bytes"),
            mb("server_rss_peak_under_c_bytes"), mb("server_rss_idle_after_c_bytes")
        ),
        _ => r.to_string(),
    }
}
