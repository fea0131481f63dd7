//! Boroughs and a trust hub as real server processes: start them with their roles, join a
//! borough to the hub with a one-time code, and wait for the link to catch up.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use polyphony_server::admin::{AdminRequest, HubStatus};
use polyphony_server::hub_link::HubMembership;

use crate::{code_from, free_udp_port, ServerProcess};

/// A fresh loopback address.
pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_udp_port()))
}

/// Start `polyphony-server` with `settings` (TOML lines) written to `polyphony-server.toml` in
/// its data directory first.
pub async fn start_configured(
    data: &Path,
    addr: SocketAddr,
    settings: &str,
) -> Result<ServerProcess> {
    std::fs::create_dir_all(data)?;
    std::fs::write(
        data.join(polyphony_server::config::CONFIG_FILE_NAME),
        settings,
    )?;
    ServerProcess::start(data.to_path_buf(), addr).await
}

/// Start a trust hub.
pub async fn start_hub(data: &Path, addr: SocketAddr) -> Result<ServerProcess> {
    start_configured(data, addr, "role = \"hub\"\n").await
}

/// The settings of the boroughs these tests start: the link tries the hub again within two
/// seconds when it cannot reach it, and sends what changed in its kept copy every second.
pub const BOROUGH_SETTINGS: &str = "hub_retry_max_secs = 2\nhub_keep_every_secs = 1\n";

/// Start a borough server with [`BOROUGH_SETTINGS`] and one team, `team`, of `practitioners`.
pub async fn start_borough(
    data: &Path,
    addr: SocketAddr,
    team: &str,
    practitioners: &[&str],
) -> Result<ServerProcess> {
    let b = start_configured(data, addr, BOROUGH_SETTINGS).await?;
    b.admin(AdminRequest::TeamAdd { name: team.into() }).await?;
    for p in practitioners {
        b.admin(AdminRequest::PractitionerAdd {
            name: (*p).into(),
            team: team.into(),
            role: None,
        })
        .await?;
    }
    Ok(b)
}

/// Add `name` on the hub, issue its code, and join `borough` with it, as the two
/// administrators would; the membership the borough keeps is returned.
pub async fn join(
    hub: &ServerProcess,
    name: &str,
    borough: &ServerProcess,
) -> Result<HubMembership> {
    hub.admin(AdminRequest::BoroughAdd { name: name.into() })
        .await?;
    let code = code_from(
        &hub.admin(AdminRequest::BoroughEnrol {
            borough: name.into(),
        })
        .await?,
    )?;
    let key = polyphony_server::hub_link::RecoveryKey::generate();
    let membership = polyphony_server::hub_link::join(&hub.addr.to_string(), &code, name, &key)
        .await
        .map_err(|e| anyhow!(e))?;
    borough
        .admin(AdminRequest::HubJoined {
            membership: membership.clone(),
        })
        .await?;
    Ok(membership)
}

/// A connection to the hub with a borough's own link certificate (as its link makes), for tests
/// that speak to the hub themselves.
pub async fn connect_as_borough(
    hub: &ServerProcess,
    m: &HubMembership,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let key = polyphony_core::identity::DeviceKey::from_pem(&m.key_pem)?;
    Ok(polyphony_core::net::connect(
        &hub.addr.to_string(),
        &hex::decode(&m.hub_ca)?,
        &hex::decode(&m.certificate)?,
        &key,
    )
    .await?)
}

/// The borough's link and how many of its cases the hub lacks changes of.
pub async fn hub_status(borough: &ServerProcess) -> Result<HubStatus> {
    Ok(serde_json::from_value(
        borough.admin(AdminRequest::HubStatus).await?,
    )?)
}

/// Wait (at most `limit`) until the hub keeps the borough's whole copy, as the borough heard: its
/// registry as it is now, and every audit record. The status then.
pub async fn wait_kept(borough: &ServerProcess, limit: Duration) -> Result<HubStatus> {
    let start = Instant::now();
    loop {
        let status = hub_status(borough).await?;
        let kept = status.safekeeping.as_ref().is_some_and(|k| {
            k.registry_kept_at.is_some()
                && !k.registry_changed_since
                && k.audit_records_kept == k.audit_records
        });
        if kept {
            return Ok(status);
        }
        if start.elapsed() > limit {
            return Err(anyhow!(
                "the hub did not keep the borough's copy within {limit:?}: {status:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait (at most `limit`) until the borough's link is connected and the hub has acknowledged
/// every change of every case the borough holds, and holds every file its records name; the
/// status then.
pub async fn wait_on_hub(borough: &ServerProcess, limit: Duration) -> Result<HubStatus> {
    let start = Instant::now();
    loop {
        let status = hub_status(borough).await?;
        let connected = status.link.as_ref().is_some_and(|l| l.connected);
        if connected && status.not_on_hub == 0 && status.files_not_on_hub == 0 {
            return Ok(status);
        }
        if start.elapsed() > limit {
            return Err(anyhow!(
                "the hub did not catch up within {limit:?}: {status:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
