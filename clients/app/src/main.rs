//! `polyphony-app`: parse arguments, open the profile, serve, open the browser.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use polyphony_app::Config;
use polyphony_core::profile::Profile;

/// The Polyphony app: case work on a home visit, offline first, in this device's browser.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The profile directory (the same one the `polyphony` command uses).
    #[arg(long, env = "POLYPHONY_HOME")]
    home: Option<PathBuf>,
    /// A file holding the passphrase (otherwise POLYPHONY_PASSPHRASE, otherwise asked for).
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
    /// Where to listen: a loopback address; port 0 means the port of this profile's last run
    /// (so a tab left open can reach the app again), or a free one the first time.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Use a new port and host name instead of the last run's (a tab open from before cannot
    /// reach the app then).
    #[arg(long)]
    new_port: bool,
    /// Do not open the browser (print the link only).
    #[arg(long)]
    no_open: bool,
    /// Warn when a case's changes have been only on this device longer than this.
    #[arg(long, default_value_t = polyphony_core::model::work::DEFAULT_UNSYNCED_WARNING_MINUTES, value_parser = clap::value_parser!(i64).range(0..))]
    unsynced_warning_minutes: i64,
    /// The longest wait between attempts to reach the borough server.
    #[arg(long, default_value_t = 30)]
    retry_max_seconds: u64,
    /// The name to enrol this device under.
    #[arg(long, default_value = "Polyphony app")]
    device_name: String,
    /// Show and read times in this IANA time zone for this run. Without it, the profile's setting
    /// (`polyphony time-zone`), which is UK time (Europe/London) unless chosen otherwise. The
    /// zone's rules come with the app, not from the device, so its own clock zone does not matter.
    #[arg(long)]
    time_zone: Option<String>,
    /// Also write the launch link to this file (for scripts and tests).
    #[arg(long)]
    url_file: Option<PathBuf>,
    /// The folder holding the Noto fonts the PDF copy is set in (scripts/pdf-fonts.sh fetches
    /// them); by default Debian's fonts-noto-core folder, /usr/share/fonts/truetype/noto.
    #[arg(long, env = "POLYPHONY_FONT_DIR")]
    font_dir: Option<PathBuf>,
}

fn default_home() -> Result<PathBuf> {
    polyphony_core::profile::default_home()
        .ok_or_else(|| anyhow!("cannot find a home directory for the profile: pass --home"))
}

fn main() -> Result<()> {
    // Record data, keys and sockets this process creates are its owner's alone.
    polyphony_core::store::private_umask();
    let args = Args::parse();
    let flag_zone = args
        .time_zone
        .as_deref()
        .map(polyphony_core::model::LocalZone::named)
        .transpose()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "polyphony_app=info,polyphony_core=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let home = match args.home.clone() {
        Some(h) => h,
        None => default_home()?,
    };
    let passphrase = match &args.passphrase_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read the passphrase file {}", f.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => match std::env::var("POLYPHONY_PASSPHRASE") {
            Ok(p) => p,
            Err(_) if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                rpassword::prompt_password("Passphrase for this device's Polyphony profile: ")
                    .context("cannot read the passphrase")?
            }
            Err(_) => {
                return Err(anyhow!(
                    "set POLYPHONY_PASSPHRASE (or pass --passphrase-file) to open the profile"
                ))
            }
        },
    };
    let profile = Profile::open(&home, &passphrase)
        .with_context(|| format!("cannot open the profile in {}", home.display()))?;
    let zone = match flag_zone {
        Some(z) => z,
        None => profile.time_zone()?,
    };
    let config = Config {
        listen: args.listen,
        new_port: args.new_port,
        unsynced_warning: time::Duration::minutes(args.unsynced_warning_minutes),
        zone,
        retry_max: std::time::Duration::from_secs(args.retry_max_seconds.max(1)),
        device_name: args.device_name.clone(),
        font_dir: args.font_dir.clone(),
        ..Config::new(home)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = polyphony_app::start(config, profile).await?;
        let url = running.launch_url();
        println!(
            "Polyphony is running. Open this link in your browser within a minute (it lets one browser in, once):"
        );
        println!("{url}");
        if let Some(f) = &args.url_file {
            running.write_launch_url(f)?;
        }
        if !args.no_open {
            open_browser(&url);
        }
        wait_for_stop().await;
        eprintln!("Stopping. Everything you saved is on this device.");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_stop() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn open_browser(url: &str) {
    let result = if cfg!(target_os = "macos") {
        std::process::Command::new("open").arg(url).spawn()
    } else if cfg!(windows) {
        std::process::Command::new("cmd")
            .args(["/C", "start", "", url])
            .spawn()
    } else {
        std::process::Command::new("xdg-open").arg(url).spawn()
    };
    if result.is_err() {
        eprintln!("Could not open the browser: copy the link above into it.");
    }
}
