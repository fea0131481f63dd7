//! A full disk on demand: a [`Store`] that passes everything to the real one until told to fail.
//!
//! The server promises that a full disk costs availability of writes, never data: it refuses new
//! changes with a clear error, acknowledges nothing it did not store, keeps serving what it holds,
//! and carries on once space returns. A real full filesystem is not always available to a test
//! (mounting one needs privileges), so the fault tests wrap the server's store in this one and
//! flip a [`DiskSwitch`]. Reads always succeed: a full disk still reads.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use polyphony_core::store::{ChunkLog, ChunkSeq, Store, StoreError};
use polyphony_core::CaseId;

/// The fault a [`FaultyStore`] injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// Everything works.
    None,
    /// Every write fails at once, as when the disk is full before the write begins.
    WritesFail,
    /// Writes land in memory but every flush fails, as when the disk fills while buffered data is
    /// being written out: nothing more becomes durable.
    FlushFails,
    /// Appends to the audit log fail; every other write and every flush works. The narrowest
    /// fault under which a read could leave unaudited (issue 14, finding 11). The error is not an
    /// I/O error, so the server does not take its store for broken and reopen it (which ends
    /// every session): what a test sees is the audit rule alone, at moments the test chooses.
    AuditFails,
}

/// Turns a [`FaultyStore`]'s fault on and off, and counts the operations it refused.
#[derive(Clone, Default)]
pub struct DiskSwitch {
    fault: Arc<AtomicU8>,
    refused: Arc<AtomicU64>,
}

impl DiskSwitch {
    /// Inject `fault` from now on.
    pub fn set(&self, fault: DiskFault) {
        let n = match fault {
            DiskFault::None => 0,
            DiskFault::WritesFail => 1,
            DiskFault::FlushFails => 2,
            DiskFault::AuditFails => 3,
        };
        self.fault.store(n, Ordering::SeqCst);
    }

    /// The fault being injected.
    pub fn get(&self) -> DiskFault {
        match self.fault.load(Ordering::SeqCst) {
            1 => DiskFault::WritesFail,
            2 => DiskFault::FlushFails,
            3 => DiskFault::AuditFails,
            _ => DiskFault::None,
        }
    }

    /// How many writes and flushes were refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn fail_if(&self, fault: DiskFault) -> Result<(), StoreError> {
        if self.get() == fault {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "No space left on device (injected by the fault tests)",
            )));
        }
        Ok(())
    }

    fn write(&self) -> Result<(), StoreError> {
        self.fail_if(DiskFault::WritesFail)
    }

    fn append_to(&self, log: &str) -> Result<(), StoreError> {
        self.write()?;
        if log == polyphony_server::audit::AUDIT_LOG && self.get() == DiskFault::AuditFails {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Engine(
                "the audit log refused the record (injected by the fault tests)".into(),
            ));
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.fail_if(DiskFault::WritesFail)?;
        self.fail_if(DiskFault::FlushFails)
    }
}

/// A store that fails writes while its [`DiskSwitch`] says so.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    switch: DiskSwitch,
}

impl FaultyStore {
    /// Wrap `inner`, controlled by `switch`.
    pub fn wrap(inner: Arc<dyn Store>, switch: DiskSwitch) -> Arc<dyn Store> {
        Arc::new(FaultyStore { inner, switch })
    }
}

impl Store for FaultyStore {
    fn append_chunk(&self, case: &CaseId, chunk: &[u8]) -> Result<ChunkSeq, StoreError> {
        self.switch.write()?;
        self.inner.append_chunk(case, chunk)
    }
    fn load_chunks(&self, case: &CaseId) -> Result<Option<ChunkLog>, StoreError> {
        self.inner.load_chunks(case)
    }
    fn compact_case(
        &self,
        case: &CaseId,
        snapshot: &[u8],
        through: ChunkSeq,
    ) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.compact_case(case, snapshot, through)
    }
    fn remove_case(&self, case: &CaseId) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.remove_case(case)
    }
    fn list_cases(&self) -> Result<Vec<CaseId>, StoreError> {
        self.inner.list_cases()
    }
    fn get_meta(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_meta(ns, key)
    }
    fn put_meta(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.put_meta(ns, key, value)
    }
    fn delete_meta(&self, ns: &str, key: &str) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.delete_meta(ns, key)
    }
    fn scan_meta(&self, ns: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_meta(ns)
    }
    fn append_log(&self, log: &str, entry: &[u8]) -> Result<u64, StoreError> {
        self.switch.append_to(log)?;
        self.inner.append_log(log, entry)
    }
    fn read_log(&self, log: &str, from: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.read_log(log, from)
    }
    fn trim_log(&self, log: &str, through: u64) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.trim_log(log, through)
    }
    fn put_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
        content: &[u8],
    ) -> Result<(), StoreError> {
        self.switch.write()?;
        self.inner.put_blob(case, hash, content)
    }
    fn get_blob(
        &self,
        case: &CaseId,
        hash: &polyphony_core::BlobHash,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_blob(case, hash)
    }
    fn has_blob(&self, case: &CaseId, hash: &polyphony_core::BlobHash) -> Result<bool, StoreError> {
        self.inner.has_blob(case, hash)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.switch.flush()?;
        self.inner.flush()
    }
}

/// A real, small filesystem (a tmpfs of a few megabytes) mounted over one directory, in a private
/// mount namespace only the processes started through [`SmallDisk::prefix`] see. A real full disk
/// tests what [`FaultyStore`] cannot: how the storage engine itself behaves when `write` fails.
///
/// Mounting needs privileges (root, or unprivileged user namespaces); where the machine allows
/// neither, [`SmallDisk::mount`] returns `None` and the test says it skipped. A holder process
/// keeps the namespace (and so the filesystem and its contents) alive across server restarts.
pub struct SmallDisk {
    holder: std::process::Child,
    dir: std::path::PathBuf,
    user_namespace: bool,
}

impl SmallDisk {
    /// Mount a tmpfs of `bytes` over `dir` (created if missing), or `None` if this machine does
    /// not allow it.
    pub fn mount(dir: &std::path::Path, bytes: u64) -> anyhow::Result<Option<SmallDisk>> {
        use std::io::BufRead;
        std::fs::create_dir_all(dir)?;
        let script = format!(
            "mount -t tmpfs -o size={bytes} polyphony-small-disk \"$0\" && echo mounted && exec sleep 900"
        );
        for flags in [&["-m"][..], &["-r", "-m"][..]] {
            let mut holder = std::process::Command::new("unshare")
                .args(flags)
                .args(["--propagation", "private", "sh", "-c", &script])
                .arg(dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn();
            let Ok(child) = holder.as_mut() else {
                return Ok(None);
            };
            let mut line = String::new();
            let out = child.stdout.take().expect("piped");
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            let mut child = holder.expect("spawned");
            if line.trim() == "mounted" {
                return Ok(Some(SmallDisk {
                    holder: child,
                    dir: dir.to_path_buf(),
                    user_namespace: flags.contains(&"-r"),
                }));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(None)
    }

    /// Run a command inside the namespace: `nsenter` execs it, keeping its pid.
    pub fn prefix(&self) -> Vec<std::ffi::OsString> {
        let mut p: Vec<std::ffi::OsString> = vec!["nsenter".into(), "-t".into()];
        p.push(self.holder.id().to_string().into());
        p.push("-m".into());
        if self.user_namespace {
            p.extend(["-U".into(), "--preserve-credentials".into()]);
        }
        p.push("--".into());
        p
    }

    /// The mounted directory as this process reaches it.
    fn inside(&self) -> std::path::PathBuf {
        let relative = self.dir.strip_prefix("/").unwrap_or(&self.dir);
        std::path::Path::new(&format!("/proc/{}/root", self.holder.id())).join(relative)
    }

    /// Fill the filesystem with a ballast file until it is full; returns the bytes written.
    pub fn fill(&self) -> anyhow::Result<u64> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.inside().join("ballast"))?;
        let block = vec![0x5a; 64 * 1024];
        let mut written = 0u64;
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(e.into()),
            }
        }
        let _ = f.sync_all();
        Ok(written)
    }

    /// Remove the ballast: space returns.
    pub fn free(&self) -> anyhow::Result<()> {
        std::fs::remove_file(self.inside().join("ballast"))?;
        Ok(())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
