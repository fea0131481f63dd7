//! Keeps `polyphony-load soak` from rotting: a few server and device SIGKILLs with the real
//! binaries (built by `cargo build --workspace --bins`, as scripts/test does first). The long run
//! is by hand; its figures are in docs/RELIABILITY.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use polyphony_load::soak::{self, SoakConfig};

fn bin(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("test binary path");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_kills_server_and_devices_and_loses_nothing() -> Result<()> {
    let config = SoakConfig {
        server_bin: bin("polyphony-server"),
        cli_bin: bin("polyphony"),
        server_kills: 3,
        device_kills: 2,
        devices: 3,
        cases: 2,
        seed: 13,
        max_round: Duration::from_millis(1500),
        device_kill_percent: 40,
        time_limit: Some(Duration::from_secs(300)),
    };
    let counts = soak::run(&config).await?;
    eprintln!("{}", counts.line());
    assert_eq!(counts.lost, 0, "{counts:?}");
    assert!(counts.targets_reached, "{counts:?}");
    assert!(
        counts.server_kills >= 3 && counts.device_kills >= 2,
        "{counts:?}"
    );
    assert!(counts.syncs_completed > 0, "{counts:?}");
    assert!(counts.acknowledged_heads_checked > 0, "{counts:?}");
    assert!(counts.saved_notes_checked > 0, "{counts:?}");
    assert!(counts.final_notes_checked > 0, "{counts:?}");
    Ok(())
}
