//! `polyphony-load`: run one benchmark workload and print its result as one JSON line (stdout) and a
//! summary (stderr). See `docs/BENCHMARKS.md` for the commands behind every published number.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use polyphony_load::memory::mib;
use polyphony_load::server::{default_server_bin, BenchServer, ServerSpec};
use polyphony_load::{soak, workload};
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
    /// Seed for the generated documents [default: 8; for `soak`, random (printed)].
    #[arg(long, global = true)]
    seed: Option<u64>,
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
    /// SIGKILL the server and device processes (the `polyphony` CLI) during live multi-device
    /// syncs, checking after each kill that nothing acknowledged or saved was lost. Prints a
    /// `SOAK ...` line (stderr) and the counts as JSON (stdout); exits non-zero on any loss. Not in
    /// CI: see docs/RELIABILITY.md for a long run.
    Soak {
        /// Run until the server has been SIGKILLed this often (and --device-kills reached).
        #[arg(long, default_value_t = 1000)]
        server_kills: u64,
        /// Run until device processes have been SIGKILLed this often while the server was up.
        #[arg(long, default_value_t = 1000)]
        device_kills: u64,
        /// Devices, alternately the laptops of two practitioners sharing every case.
        #[arg(long, default_value_t = 4)]
        devices: usize,
        /// Cases, each written and synced by every device.
        #[arg(long, default_value_t = 4)]
        cases: usize,
        /// The `polyphony` binary [default: beside this binary].
        #[arg(long, value_name = "PATH")]
        cli_bin: Option<PathBuf>,
        /// The longest a round of live syncs runs before the server is killed, in milliseconds.
        #[arg(long, default_value_t = 1500)]
        max_round_ms: u64,
        /// Percent of device commands scheduled for a SIGKILL at a random moment of their run.
        #[arg(long, default_value_t = 30)]
        device_kill_percent: u64,
        /// Stop after this many seconds with the counts so far, targets reached or not.
        #[arg(long, value_name = "SECONDS")]
        time_limit: Option<u64>,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Workload::Soak { .. } = cli.workload {
        return soak(cli).await;
    }
    let seed = cli.seed.unwrap_or(8);
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
        Workload::FirstSync { cases } => workload::first_sync(&server, cases, seed).await,
        Workload::Reconnect { cases, edited } => {
            workload::reconnect(&server, cases, edited, seed).await
        }
        Workload::Morning {
            devices,
            cases,
            edited,
            setup_parallel,
        } => {
            let m = workload::morning_setup(&server, devices, cases, edited, setup_parallel, seed)
                .await?;
            workload::morning(&server, m).await
        }
        Workload::Memory {
            cases,
            per_device,
            devices,
        } => workload::memory(&mut server, cases, per_device, devices, seed).await,
        Workload::Soak { .. } => unreachable!("handled above"),
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

async fn soak(cli: Cli) -> Result<()> {
    let Workload::Soak {
        server_kills,
        device_kills,
        devices,
        cases,
        cli_bin,
        max_round_ms,
        device_kill_percent,
        time_limit,
    } = cli.workload
    else {
        unreachable!("called for soak only");
    };
    if cli.target.is_some() || matches!(cli.server, Where::InProcess) {
        anyhow::bail!("the soak SIGKILLs the server: it runs it as a child process only");
    }
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("soak: seed {seed} (replay the schedule with --seed {seed})");
    let config = soak::SoakConfig {
        server_bin: cli.server_bin.unwrap_or_else(default_server_bin),
        cli_bin: cli_bin.unwrap_or_else(|| default_server_bin().with_file_name("polyphony")),
        server_kills,
        device_kills,
        devices,
        cases,
        seed,
        max_round: std::time::Duration::from_millis(max_round_ms),
        device_kill_percent,
        time_limit: time_limit.map(std::time::Duration::from_secs),
    };
    let counts = soak::run(&config).await?;
    let mut result = serde_json::to_value(&counts)?;
    result["workload"] = Value::from("soak");
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
    eprintln!("{}", counts.line());
    if counts.lost > 0 {
        anyhow::bail!(
            "{} acknowledged change(s) or saved note(s) lost; replay with --seed {seed}",
            counts.lost
        );
    }
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
