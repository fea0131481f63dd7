//! The driver under a tokio runtime: sessions waiting for durability at once, and the core's
//! hooks reaching the channels the sessions await.

use std::future::Future;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use polyphony_core::store::MemoryStore;
use polyphony_core::CaseId;

use super::*;
use crate::storage::test_disk::Disk;
use crate::storage::LOST_TICKET;

/// `what`, which must not take long.
async fn soon<T>(what: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), what)
        .await
        .expect("awaited in time")
}

/// Sessions on a multi-threaded runtime waiting at once: each is told its write is durable only
/// after a flush that covers it, they share a few flushes, and a lost ticket is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_sessions_share_flushes_and_each_waits_for_one_covering_its_write() {
    const WAITERS: u64 = 32;
    let (storage, disk) = Disk::storage();
    let storage = Arc::new(storage);
    let registry = Registry::new(Arc::new(MemoryStore::new()));
    let driver = CoreDriver::attach(&storage, &registry);
    let mut waiters = tokio::task::JoinSet::new();
    for i in 0..WAITERS {
        let (storage, disk, driver) = (storage.clone(), disk.clone(), driver.clone());
        waiters.spawn(async move {
            let (ticket, written) = disk.write(&storage, &format!("w{i}"));
            driver.durable(ticket).await.unwrap();
            assert!(
                disk.flushed_through.load(SeqCst) >= written,
                "waiter {i} was told its write is durable before a flush covered it"
            );
        });
    }
    while let Some(done) = soon(waiters.join_next()).await {
        done.unwrap();
    }
    let flushes = disk.flushes.load(SeqCst);
    assert!(
        flushes < WAITERS / 4,
        "{flushes} flushes for {WAITERS} waiters: none shared"
    );
    assert!(driver.durable(LOST_TICKET).await.is_err());
}

/// A failed flush fails the wait; once the store is reopened the sessions' watch changes, and
/// the ticket stays refused for good.
#[tokio::test]
async fn a_failed_flush_fails_the_wait_and_a_reopen_reaches_the_sessions() {
    let (storage, disk) = Disk::storage();
    let registry = Registry::new(Arc::new(MemoryStore::new()));
    let driver = CoreDriver::attach(&storage, &registry);
    let mut reopened = driver.reopened();

    disk.failing.store(true, SeqCst);
    let (pending, _) = disk.write(&storage, "pending");
    assert!(soon(driver.durable(pending)).await.is_err());
    assert!(!reopened.has_changed().unwrap());

    disk.failing.store(false, SeqCst);
    let generation = storage.recover().unwrap().expect("reopened");
    soon(reopened.changed()).await.unwrap();
    assert_eq!(*reopened.borrow_and_update(), generation);
    assert!(
        soon(driver.durable(pending)).await.is_err(),
        "a ticket lost to the reopen was reported durable"
    );
    let (later, _) = disk.write(&storage, "later");
    soon(driver.durable(later)).await.unwrap();
}

/// What storage and the registry tell their hooks reaches every session's channels: a changed
/// case on the broadcast, a change of access on the watch.
#[tokio::test]
async fn announced_changes_and_changes_of_access_reach_the_sessions() {
    let store = Arc::new(MemoryStore::new());
    let storage = ServerStorage::new(store.clone(), 16);
    let registry = Registry::new(store);
    let driver = CoreDriver::attach(&storage, &registry);
    let (mut changes, mut also) = (driver.case_changes(), driver.case_changes());
    let mut access = driver.access_changes();

    let case = CaseId::random();
    storage.announce(CaseChanged { case, origin: 7 });
    for receiver in [&mut changes, &mut also] {
        let told = soon(receiver.recv()).await.unwrap();
        assert_eq!((told.case, told.origin), (case, 7));
    }

    let north = registry.add_team("North").unwrap().id;
    let south = registry.add_team("South").unwrap().id;
    assert!(
        !access.has_changed().unwrap(),
        "a team alone changes nothing"
    );
    // A new practitioner changes North's team list, which connected devices receive.
    let sam = registry.add_practitioner("Sam", north).unwrap();
    soon(access.changed()).await.unwrap();
    assert_eq!(*access.borrow_and_update(), 1);
    registry.add_practitioner_to_team(&sam.id, south).unwrap();
    soon(access.changed()).await.unwrap();
    assert_eq!(*access.borrow_and_update(), registry.access_epoch());
    assert_eq!(registry.access_epoch(), 2);
}
