//! The trust-wide figures (issue 18), with a hub and two boroughs as real server processes: once
//! the boroughs' links have brought their devices' cases to the hub, the hub's figures for each
//! team are the figures the team's own device computes, and each case the hub read for them is in
//! its audit log.

use std::time::Duration;

use anyhow::{anyhow, Result};
use polyphony_core::export::figures::team_table;
use polyphony_core::model::CaseFigures;
use polyphony_core::CaseId;
use polyphony_e2e::federation::{join, loopback, start_borough, start_hub, wait_on_hub};
use polyphony_e2e::TestDevice;
use polyphony_server::admin::{AdminRequest, FiguresBy, TrustFigures, READ_FOR_FIGURES};
use polyphony_server::audit::{Actor, AuditAction, AuditRecord};

/// How long a link may take to catch up (debug build, two cores).
const CATCH_UP: Duration = Duration::from_secs(90);

/// The figures rows the device shows for `cases` (in case-id order, as the hub lists them).
fn devices_rows(
    device: &mut TestDevice,
    mut cases: Vec<CaseId>,
) -> Result<Vec<polyphony_core::export::figures::Row>> {
    cases.sort();
    let mut figures = Vec::new();
    for case in cases {
        figures.push(CaseFigures::from_view(&device.peek(case)?));
    }
    Ok(team_table(&figures))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_figures_for_each_team_are_its_devices_figures() -> Result<()> {
    polyphony_e2e::init_logs();
    let dir = tempfile::tempdir()?;
    let hub = start_hub(&dir.path().join("hub"), loopback()).await?;
    // Both boroughs call their team "Crisis": the hub must keep them apart by borough.
    let north = start_borough(&dir.path().join("north"), loopback(), "Crisis", &["Ana"]).await?;
    let south = start_borough(&dir.path().join("south"), loopback(), "Crisis", &["Bo"]).await?;
    join(&hub, "North", &north).await?;
    join(&hub, "South", &south).await?;
    let mut ana = north.device("Ana").await?;
    let mut bo = south.device("Bo").await?;
    let (a1, _) = ana.case_with_meeting("Person One of North")?;
    let (a2, _) = ana.case_with_meeting("Person Two of North")?;
    let (b1, _) = bo.case_with_meeting("Person One of South")?;
    ana.sync().await?;
    bo.sync().await?;
    wait_on_hub(&north, CATCH_UP).await?;
    wait_on_hub(&south, CATCH_UP).await?;

    let figures: TrustFigures = serde_json::from_value(
        hub.admin(AdminRequest::Figures {
            by: FiguresBy::Team,
        })
        .await?,
    )?;
    assert!(figures.unreadable.is_empty(), "{figures:?}");
    for (borough, device, cases) in [
        ("North", &mut ana, vec![a1, a2]),
        ("South", &mut bo, vec![b1]),
    ] {
        let b = figures
            .boroughs
            .iter()
            .find(|b| b.name == borough)
            .ok_or_else(|| anyhow!("no figures for {borough}: {figures:?}"))?;
        assert_eq!(b.teams.len(), 1, "{b:?}");
        let team = &b.teams[0];
        assert_eq!(team.name, "Crisis");
        let expected = devices_rows(device, cases.clone())?;
        assert_eq!(
            team.rows, expected,
            "{borough}'s team, as its device counts"
        );
        assert_eq!(b.rows, expected, "{borough} has one team");
        assert_eq!(team.rows.last().map(|r| r.cases), Some(cases.len()));
    }

    for case in [a1, a2, b1] {
        let records: Vec<AuditRecord> = serde_json::from_value(
            hub.admin(AdminRequest::Audit {
                case: Some(case),
                verify: false,
            })
            .await?,
        )?;
        let reads: Vec<_> = records
            .iter()
            .filter(|r| r.event.action == AuditAction::Read)
            .collect();
        assert_eq!(reads.len(), 1, "case {case}: {records:?}");
        assert_eq!(reads[0].event.actor, Actor::Admin);
        assert_eq!(reads[0].event.detail, READ_FOR_FIGURES);
    }

    // North moves a case to another of its teams: the hub's registry follows, and its figures
    // count the case under the team North's own devices do.
    north
        .admin(AdminRequest::TeamAdd {
            name: "Second".into(),
        })
        .await?;
    // The new team reaches the hub with the link's next roster (it reconnects for it); the move
    // after that goes over the live link, which does not reconnect for it.
    let start = std::time::Instant::now();
    loop {
        let boroughs = hub.admin(AdminRequest::Boroughs).await?;
        let has_second = boroughs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["borough"]["name"] == "North")
            .any(|b| {
                b["teams"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["name"] == "Second")
            });
        if has_second {
            break;
        }
        assert!(
            start.elapsed() < CATCH_UP,
            "the hub did not hear of North's new team"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sessions = |s: polyphony_server::admin::HubStatus| s.link.map(|l| l.sessions);
    let before = sessions(polyphony_e2e::federation::hub_status(&north).await?);
    north
        .admin(AdminRequest::CaseMove {
            case: a2,
            team: "Second".into(),
        })
        .await?;
    let start = std::time::Instant::now();
    let figures = loop {
        let figures: TrustFigures = serde_json::from_value(
            hub.admin(AdminRequest::Figures {
                by: FiguresBy::Team,
            })
            .await?,
        )?;
        let north = figures.boroughs.iter().find(|b| b.name == "North");
        let moved = north.is_some_and(|b| {
            b.teams
                .iter()
                .any(|t| t.name == "Second" && t.rows.last().map(|r| r.cases) == Some(1))
        });
        if moved {
            break figures;
        }
        assert!(
            start.elapsed() < CATCH_UP,
            "the hub did not follow the move"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let b = figures
        .boroughs
        .iter()
        .find(|b| b.name == "North")
        .expect("North");
    for (team, cases) in [("Crisis", vec![a1]), ("Second", vec![a2])] {
        let t = b.teams.iter().find(|t| t.name == team).expect("the team");
        assert_eq!(t.rows, devices_rows(&mut ana, cases)?, "North's {team}");
    }
    assert_eq!(
        sessions(polyphony_e2e::federation::hub_status(&north).await?),
        before,
        "the move went over the live link"
    );
    Ok(())
}
