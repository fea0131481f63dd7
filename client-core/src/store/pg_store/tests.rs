//! The PostgreSQL engine: the conformance suite, and what only a shared database can get wrong.

use super::testing::{fresh_store, TestSchema};
use super::{PgOptions, PgStore};
use crate::store::conformance::conformance_tests;
use crate::store::{KeySource, SealKey, Store, StoreError};
use crate::CaseId;

conformance_tests!(fresh_store());

#[test]
fn reopened_with_its_key_it_holds_everything_and_another_key_is_refused() {
    let schema = TestSchema::new();
    let key = SealKey::generate();
    let case = CaseId::random();
    {
        let store = PgStore::open(&schema.options, KeySource::Raw(key.clone())).unwrap();
        store.append_chunk(&case, b"first").unwrap();
        store.put_meta("ns", "k", b"v").unwrap();
        store.append_log("audit", b"e0").unwrap();
        store.flush().unwrap();
    }
    let store = PgStore::open(&schema.options, KeySource::Raw(key)).unwrap();
    assert_eq!(store.load_chunks(&case).unwrap().unwrap()[0].1, b"first");
    assert_eq!(store.get_meta("ns", "k").unwrap().unwrap(), b"v");
    // Log indices carry on from where they were.
    assert_eq!(store.append_log("audit", b"e1").unwrap(), 1);
    drop(store);
    let wrong = PgStore::open(&schema.options, KeySource::Raw(SealKey::generate()));
    assert!(
        matches!(wrong, Err(StoreError::WrongPassphrase)),
        "another key must be refused: {wrong:?}"
    );
}

#[test]
fn nothing_in_the_database_holds_a_value_in_the_clear() {
    let (schema, store) = fresh_store();
    let secret = b"Marcus says the voices started after the eviction";
    let case = CaseId::random();
    store.append_chunk(&case, secret).unwrap();
    store.put_meta("ns", "k", secret).unwrap();
    store.append_log("audit", secret).unwrap();
    let hash = crate::BlobHash::of(secret);
    store.put_blob(&case, &hash, secret).unwrap();
    store.flush().unwrap();
    // Every byte of every table, read back raw.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dump: Vec<Vec<u8>> = runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(&schema.options.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut all = Vec::new();
        for table in [
            "header",
            "cases",
            "chunks",
            "meta",
            "logs",
            "log_heads",
            "blobs",
        ] {
            let rows = client
                .query(
                    &format!(
                        "SELECT convert_to(t::text, 'UTF8') FROM {}.{table} t",
                        schema.options.schema
                    ),
                    &[],
                )
                .await
                .unwrap();
            all.extend(rows.iter().map(|r| r.get::<_, Vec<u8>>(0)));
        }
        all
    });
    assert!(
        dump.len() >= 8,
        "the tables hold the values: {}",
        dump.len()
    );
    let needle = hex::encode(&secret[..16]);
    for row in &dump {
        let text = String::from_utf8_lossy(row);
        assert!(
            !text.contains("voices") && !text.contains(&needle),
            "a row holds the value in the clear: {text}"
        );
    }
    drop(store);
}

#[test]
fn two_stores_on_one_schema_keep_each_case_in_sequence_order() {
    let schema = TestSchema::new();
    let key = SealKey::generate();
    let a = PgStore::open(&schema.options, KeySource::Raw(key.clone())).unwrap();
    let b = PgStore::open(&schema.options, KeySource::Raw(key)).unwrap();
    let case = CaseId::random();
    let stores = [&a, &b];
    std::thread::scope(|scope| {
        for (i, store) in stores.iter().enumerate() {
            for t in 0..4 {
                scope.spawn(move || {
                    for n in 0..25 {
                        let seq = store
                            .append_chunk(&case, format!("{i}-{t}-{n}").as_bytes())
                            .unwrap();
                        // Whoever reads after an append sees it, and nothing numbered after it is
                        // missing below it later: the log read now is a prefix of the final one.
                        let log = store.load_chunks(&case).unwrap().unwrap();
                        assert!(log.iter().any(|(s, _)| *s == seq));
                    }
                });
            }
        }
    });
    let log = a.load_chunks(&case).unwrap().unwrap();
    assert_eq!(log.len(), 200);
    assert!(log.windows(2).all(|w| w[0].0 < w[1].0));
    // A compaction on one store while the other appends keeps every chunk after it.
    let through = log[150].0;
    a.compact_case(&case, b"snapshot", through).unwrap();
    b.append_chunk(&case, b"after").unwrap();
    let log = b.load_chunks(&case).unwrap().unwrap();
    assert_eq!(log.len(), 1 + 49 + 1);
    assert_eq!(log[0], (through, b"snapshot".to_vec()));
}

#[test]
fn a_database_on_another_machine_or_a_bad_schema_is_refused_before_connecting() {
    let key = || KeySource::Raw(SealKey::generate());
    let remote = PgStore::open(&PgOptions::new("host=db.example.nhs.uk dbname=x"), key());
    assert!(
        matches!(&remote, Err(StoreError::InvalidRequest(m)) if m.contains("not on this machine")),
        "{remote:?}"
    );
    let mut options = PgOptions::new("host=/run/postgresql dbname=x");
    options.schema = "bad; DROP TABLE".into();
    let bad = PgStore::open(&options, key());
    assert!(
        matches!(&bad, Err(StoreError::InvalidRequest(m)) if m.contains("schema name")),
        "{bad:?}"
    );
}

/// Run one SQL statement in the test cluster, outside any store.
fn sql(statement: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(&super::testing::url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client.batch_execute(statement).await.unwrap();
    });
}

#[test]
fn one_writer_at_a_time_the_standby_waits_and_a_deposed_writer_writes_nothing() {
    let schema = TestSchema::new();
    let key = SealKey::generate();
    let a = PgStore::open(&schema.options, KeySource::Raw(key.clone())).unwrap();
    let b = std::sync::Arc::new(PgStore::open(&schema.options, KeySource::Raw(key)).unwrap());
    a.become_writer(|| panic!("the first writer waits for nobody"))
        .unwrap();
    a.put_meta("ns", "a", b"from a").unwrap();

    // B waits as the standby while A holds the lock.
    let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
    let standby = {
        let b = b.clone();
        std::thread::spawn(move || {
            b.become_writer(move || {
                let _ = waiting_tx.send(());
            })
        })
    };
    waiting_rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("B is told it waits");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !standby.is_finished(),
        "B must not become the writer while A is"
    );
    a.put_meta("ns", "a2", b"A still writes").unwrap();

    // A loses its lock's connection (as a network drop would do); B takes over at once and
    // A's next write is refused: the epoch moved on.
    sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND objid = (SELECT (hashtextextended('{}:polyphony-writer', 0) & 4294967295)::oid)",
        schema.options.schema
    ));
    standby.join().unwrap().expect("B becomes the writer");
    let refused = a.put_meta("ns", "a3", b"after B took over");
    assert!(
        matches!(&refused, Err(StoreError::Engine(m)) if m.contains("another server node")),
        "{refused:?}"
    );
    b.put_meta("ns", "b", b"from b").unwrap();
    // A tries to take its lock back, finds B holding it, and stands down for good.
    for _ in 0..100 {
        if a.deposed() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(a.deposed(), "A learns it was deposed");
    assert!(a.append_chunk(&CaseId::random(), b"x").is_err());
    assert_eq!(b.get_meta("ns", "a2").unwrap().unwrap(), b"A still writes");
    assert!(b.get_meta("ns", "a3").unwrap().is_none());
}

/// End the session that holds a schema's writer lock (as a dropped network would).
fn cut_writer_lock(schema: &str) {
    sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND objid = (SELECT (hashtextextended('{schema}:polyphony-writer', 0) & 4294967295)::oid)"
    ));
}

#[test]
fn a_writer_that_lost_its_lock_while_another_wrote_never_takes_it_back() {
    let schema = TestSchema::new();
    let key = SealKey::generate();
    let a = PgStore::open(&schema.options, KeySource::Raw(key.clone())).unwrap();
    a.become_writer(|| {}).unwrap();
    let b =
        std::sync::Arc::new(PgStore::open(&schema.options, KeySource::Raw(key.clone())).unwrap());
    let standby = {
        let b = b.clone();
        std::thread::spawn(move || b.become_writer(|| {}))
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    // A's lock goes; B, waiting, takes over, writes, and stops, all before A tries again
    // (every half second): A finds the lock free, but the epoch is no longer its own.
    cut_writer_lock(&schema.options.schema);
    standby.join().unwrap().expect("B becomes the writer");
    b.put_meta("ns", "b", b"written while A had lost its lock")
        .unwrap();
    drop(b);
    for _ in 0..100 {
        if a.deposed() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(a.deposed(), "A must not take its lock back after B wrote");
    assert!(a.put_meta("ns", "a", b"stale").is_err());
    // A new writer opens what B wrote.
    let c = PgStore::open(&schema.options, KeySource::Raw(key)).unwrap();
    c.become_writer(|| panic!("nobody holds the lock")).unwrap();
    assert_eq!(
        c.get_meta("ns", "b").unwrap().unwrap(),
        b"written while A had lost its lock"
    );
    assert!(c.get_meta("ns", "a").unwrap().is_none());
}

/// A certificate authority and a server certificate it signed for `localhost`, as PEM.
fn test_ca_and_server() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    (ca_cert.pem(), server.pem(), server_key.serialize_pem())
}

#[test]
fn with_a_ca_file_every_connection_uses_tls_and_checks_the_servers_certificate() {
    use std::os::unix::fs::PermissionsExt;
    // Turn TLS on in the test cluster, with a certificate from a CA of this test's own. (Other
    // tests connect without TLS, which the cluster still allows.)
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ca, cert, key) = test_ca_and_server();
    let (cert_file, key_file, ca_file) = (
        dir.path().join("server.crt"),
        dir.path().join("server.key"),
        dir.path().join("ca.crt"),
    );
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    std::fs::write(&ca_file, &ca).unwrap();
    std::fs::set_permissions(&cert_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    // PostgreSQL reads its key as the cluster's owner and refuses one others may read.
    if unsafe { libc::geteuid() } == 0 {
        let owner = std::process::Command::new("chown")
            .arg("postgres")
            .arg(&key_file)
            .status()
            .unwrap();
        assert!(owner.success());
    }
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // One statement at a time: ALTER SYSTEM refuses to run inside a transaction block.
    for statement in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert_file.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key_file.display()),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        sql(&statement);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));

    let schema = TestSchema::new();
    let mut options = schema.options.clone();
    // `localhost`, the name in the certificate, checked by rustls.
    options.url = options.url.replace("host=127.0.0.1", "host=localhost");
    options.ca_file = Some(ca_file.clone());
    let store = PgStore::open(&options, KeySource::Raw(SealKey::generate())).unwrap();
    store.put_meta("ns", "k", b"over TLS").unwrap();
    assert_eq!(store.get_meta("ns", "k").unwrap().unwrap(), b"over TLS");
    // The meta round trip went over TLS: ask the server about this very connection.
    let ssl = store
        .run(|client, _| async move {
            let row = client
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(super::pg_error)?;
            Ok(row.get::<_, bool>(0))
        })
        .unwrap();
    assert!(ssl, "the store's connection uses TLS");
    drop(store);

    // A CA that did not sign the server's certificate: refused, nothing opened.
    let (other_ca, _, _) = test_ca_and_server();
    let other = dir.path().join("other-ca.crt");
    std::fs::write(&other, other_ca).unwrap();
    options.ca_file = Some(other);
    let refused = PgStore::open(&options, KeySource::Raw(SealKey::generate()));
    assert!(
        matches!(&refused, Err(StoreError::Engine(m)) if m.contains("certificate")),
        "{refused:?}"
    );
    // With the right CA, a host on another machine is no longer refused before connecting (it
    // is tried, over TLS).
    let mut remote = PgOptions::new("host=db.invalid dbname=x connect_timeout=1");
    remote.ca_file = Some(ca_file);
    let tried = PgStore::open(&remote, KeySource::Raw(SealKey::generate()));
    assert!(
        matches!(&tried, Err(StoreError::Engine(m)) if m.contains("cannot reach")),
        "{tried:?}"
    );
    for statement in [
        "ALTER SYSTEM RESET ssl",
        "ALTER SYSTEM RESET ssl_cert_file",
        "ALTER SYSTEM RESET ssl_key_file",
        "SELECT pg_reload_conf()",
    ] {
        sql(statement);
    }
}
