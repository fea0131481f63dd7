//! Keeps the load generator honest: each workload, tiny, against a server in this process. No
//! timings are asserted; only that every case arrives and is acknowledged.

use anyhow::Result;
use polyphony_load::server::{BenchServer, ServerSpec};
use polyphony_load::workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_small_and_everything_is_acknowledged() -> Result<()> {
    let server = BenchServer::start(ServerSpec::InProcess, None).await?;
    let a = workload::first_sync(&server, 6, 1).await?;
    assert_eq!(a["cases"], 6);
    assert!(
        a["downloaded_bytes"].as_u64().unwrap_or(0) > 6 * 2000,
        "{a}"
    );

    let b = workload::reconnect(&server, 8, 3, 2).await?;
    assert_eq!(b["edited"], 3);

    let m = workload::morning_setup(&server, 3, 4, 2, 2, 3).await?;
    let c = workload::morning(&server, m).await?;
    assert_eq!(c["acknowledged_devices"], 3, "{c}");
    assert_eq!(c["unacknowledged_cases"], 0, "{c}");
    server.stop().await;
    Ok(())
}
