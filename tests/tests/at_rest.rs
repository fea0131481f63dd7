//! Issue 14, finding 10: what a copy of the disk gets. The server's data directory and a device's
//! profile are private to their owner (directories 0700, files 0600), and the server's key file can
//! live apart from its data, so a copy of the data directory alone opens nothing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{ensure, Result};
use polyphony_core::store::{KeySource, SledStore, StoreError};
use polyphony_e2e::{free_udp_port, ServerProcess};
use polyphony_server::admin::AdminRequest;

/// Every directory under `root` (itself included) is 0700 and every file 0600. Returns how many
/// of each were checked.
fn assert_private(root: &Path) -> Result<(u64, u64)> {
    let (mut dirs, mut files) = (0, 0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            ensure!(mode == 0o700, "{} is {mode:o}, not 700", path.display());
            dirs += 1;
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else if meta.is_file() {
            ensure!(mode == 0o600, "{} is {mode:o}, not 600", path.display());
            files += 1;
        }
    }
    Ok((dirs, files))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_profiles_are_private_and_the_key_can_live_apart_from_the_data() -> Result<()> {
    let root = tempfile::tempdir()?;
    let data = root.path().join("server");
    let secrets = root.path().join("secrets");
    std::fs::create_dir_all(&data)?;
    std::fs::create_dir_all(&secrets)?;
    let key = secrets.join("borough.key");
    std::fs::write(
        data.join(polyphony_server::config::CONFIG_FILE_NAME),
        format!("key_file = {:?}\n", key.display().to_string()),
    )?;
    let addr = format!("127.0.0.1:{}", free_udp_port()).parse()?;
    let mut server = ServerProcess::start(data.clone(), addr).await?;
    server
        .admin(AdminRequest::TeamAdd {
            name: "North".into(),
        })
        .await?;
    server
        .admin(AdminRequest::PractitionerAdd {
            name: "Sam".into(),
            team: "North".into(),
            role: None,
        })
        .await?;
    let mut device = server.device("Sam").await?;
    let (case, meeting) = device.case_with_meeting("Maria")?;
    device.note(case, meeting, "Maria spoke first.")?;
    device.sync().await?;
    server.kill();

    ensure!(
        key.is_file(),
        "the key file is where the configuration says"
    );
    ensure!(
        !data.join("server.key").exists(),
        "no key file in the data directory"
    );
    ensure!(std::fs::metadata(&key)?.permissions().mode() & 0o777 == 0o600);
    // The config file was written by this test with its own umask; the rest is the server's.
    std::fs::remove_file(data.join(polyphony_server::config::CONFIG_FILE_NAME))?;
    let (server_dirs, server_files) = assert_private(&data)?;
    let (device_dirs, device_files) = assert_private(&device.home())?;

    // A copy of the data directory alone (a backup, a stolen disk) does not open.
    match SledStore::open(
        &data.join("db"),
        KeySource::KeyFile(root.path().join("no-such.key")),
    ) {
        Err(StoreError::KeyFile(_)) => {}
        Err(other) => anyhow::bail!("unexpected error without the key: {other}"),
        Ok(_) => anyhow::bail!("the data directory opened without its key"),
    }
    let wrong = root.path().join("wrong.key");
    KeySource::create_key_file(&wrong)?;
    ensure!(
        matches!(
            SledStore::open(&data.join("db"), KeySource::KeyFile(wrong)),
            Err(StoreError::WrongPassphrase)
        ),
        "another key does not open the data"
    );
    polyphony_e2e::report_figures(
        "private_at_rest",
        &[
            ("server_dirs_0700", server_dirs),
            ("server_files_0600", server_files),
            ("device_dirs_0700", device_dirs),
            ("device_files_0600", device_files),
        ],
    );
    Ok(())
}
