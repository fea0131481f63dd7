//! A filesystem that loses power: writes nobody fsynced live only in memory and are thrown away
//! when the test pulls the plug.
//!
//! Killing a process (SIGKILL) tests what a program keeps across its own death; the kernel still
//! holds every write it made. A power cut is harsher: whatever sat in the page cache or the disk's
//! write cache is gone, and only what was fsynced survives. Polyphony promises that an
//! acknowledged change and a reported-saved edit survive that, which holds only if the server and
//! the device store fsync before they say so (sled's own `flush` uses `sync_file_range`, which
//! makes no promise about the file's metadata or a power cut). This module makes that testable,
//! after the idea of LazyFS
//! (dsrhaslab/lazyfs): a FUSE filesystem, served from a thread of the test process, that keeps
//! two copies of every regular file, its current content and its durable content.
//!
//! - `write`, `truncate` (setattr size) and `fallocate` change the current content only.
//! - `fsync` and `fdatasync` of a file make its current content durable. Nothing else does:
//!   `sync_file_range` and `close` never reach the filesystem as a durability request (files are
//!   opened in direct-I/O mode, so there is no kernel page cache to write back either).
//! - [`PowerFs::cut`] is the power cut: every file reverts to its durable content, and from that
//!   instant every operation fails with EIO, as on a machine whose disk has gone away. Processes
//!   that were using the mount must then be stopped (SIGKILL a server, drop a store) before
//!   [`PowerFs::power_on`] serves the reverted state again; file handles opened before the cut stay
//!   dead for good, so a straggling thread of a dropped store cannot write into the new life.
//!
//! **Metadata model: LazyFS's.** Creating, renaming and removing files and directories take effect
//! at once and survive a cut; only file *data* that was not fsynced is lost. A file created and
//! written but never fsynced is still there after the cut, empty (as ext4 with delayed allocation
//! leaves it). We chose this model because it is LazyFS's, it is simple enough to be obviously
//! right, and the store under test fsyncs its directories anyway (`sync_dir_tree` in
//! `client-core/src/store/sled_store.rs`), so the stricter model (directory entries lost without an
//! fsync of the directory) would exercise little more here. Writes between fsyncs are lost whole,
//! never torn or reordered: a weaker disk than this is not modelled.
//!
//! [`Metadata::OnDirectoryFsync`] is that stricter model, for a run by hand
//! (`POLYPHONY_POWER_STRICT_DIRS=1` in `tests/tests/power_loss.rs`).
//!
//! Locks: sled locks its files with `flock` (fs2). The filesystem does not claim FUSE lock support
//! at mount time, so the kernel keeps `flock` and POSIX locks locally, which is exactly right for
//! processes on one machine. Mounting needs `/dev/fuse` and root (or `fusermount3` from Debian's
//! `fuse3`, which `scripts/setup-test-deps.sh` installs); [`PowerFs::mount`] says why it could not.
//!
//! The model favours being plainly correct over being fast: one mutex over everything, file data in
//! copy-on-write pages so an fsync costs a pointer copy per page, not a copy of the file.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// Attributes and entries are never cached by the kernel: a cut changes sizes under it.
const TTL: Duration = Duration::ZERO;
const PAGE: usize = 4096;
type Page = [u8; PAGE];

/// When a change to a directory (a create, rename, unlink, mkdir) survives a power cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metadata {
    /// At once: LazyFS's model, and what a journalling filesystem usually gives (the default).
    Immediate,
    /// Only once the directory itself is fsynced: POSIX's worst case. A cut puts every directory
    /// back to its entries at its last fsync (empty if never), so a file whose name was never made
    /// durable vanishes even if its data was fsynced, and a removed or renamed-over name can
    /// come back (with its durable content).
    OnDirectoryFsync,
}

/// What a [`PowerFs`] has done so far (for the test's figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerCounts {
    /// `write` calls served.
    pub writes: u64,
    /// `fsync`/`fdatasync` calls on files.
    pub fsyncs: u64,
    /// `fsyncdir` calls.
    pub dir_fsyncs: u64,
    /// Power cuts.
    pub cuts: u64,
    /// Files whose content a cut changed (they had writes nobody fsynced).
    pub files_reverted: u64,
    /// Directories whose entries a cut changed ([`Metadata::OnDirectoryFsync`] only).
    pub dirs_reverted: u64,
    /// Bytes of file content that differed from the durable content at a cut (current length of
    /// each reverted file, a rough measure of what the cut threw away).
    pub bytes_discarded: u64,
    /// Operations that change the filesystem, served so far: writes, fsyncs of files and
    /// directories, creations, renames, removals, attribute changes, allocations. (What
    /// [`PowerFs::cut_before_mutation`] counts.)
    pub mutations: u64,
}

/// A file's content as copy-on-write pages: a durable copy shares every page it has in common with
/// the current one.
#[derive(Clone, Default)]
struct Content {
    len: u64,
    pages: Vec<Arc<Page>>,
}

impl Content {
    fn read(&self, offset: u64, size: u32) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = self.len.min(offset + u64::from(size));
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let page = &self.pages[(pos / PAGE as u64) as usize];
            let start = (pos % PAGE as u64) as usize;
            let take = ((end - pos) as usize).min(PAGE - start);
            out.extend_from_slice(&page[start..start + take]);
            pos += take as u64;
        }
        out
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        if end > self.len {
            self.set_len(end);
        }
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let page = Arc::make_mut(&mut self.pages[(pos / PAGE as u64) as usize]);
            let start = (pos % PAGE as u64) as usize;
            let take = rest.len().min(PAGE - start);
            page[start..start + take].copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            pos += take as u64;
        }
    }

    /// Truncate or extend with zeros.
    fn set_len(&mut self, len: u64) {
        let pages = len.div_ceil(PAGE as u64) as usize;
        if len < self.len {
            self.pages.truncate(pages);
            let tail = (len % PAGE as u64) as usize;
            if tail != 0 {
                if let Some(last) = self.pages.last_mut() {
                    Arc::make_mut(last)[tail..].fill(0);
                }
            }
        } else {
            self.pages.resize_with(pages, || Arc::new([0u8; PAGE]));
        }
        self.len = len;
    }

    /// Same bytes as `other` (cheap when they share pages).
    fn same_as(&self, other: &Content) -> bool {
        self.len == other.len
            && self
                .pages
                .iter()
                .zip(&other.pages)
                .all(|(a, b)| Arc::ptr_eq(a, b) || a[..] == b[..])
    }
}

enum Body {
    File {
        current: Content,
        durable: Content,
    },
    Dir {
        parent: u64,
        entries: BTreeMap<OsString, u64>,
        /// The entries as of the last fsync of this directory (used by
        /// [`Metadata::OnDirectoryFsync`]).
        durable_entries: BTreeMap<OsString, u64>,
    },
    Symlink(PathBuf),
    /// A socket or fifo: only its name matters to the filesystem (the server's admin socket).
    Special(FileType),
}

struct Node {
    body: Body,
    perm: u16,
    uid: u32,
    gid: u32,
    rdev: u32,
    nlink: u32,
    open: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
}

impl Node {
    fn new(body: Body, perm: u16, req: &Request) -> Node {
        let now = SystemTime::now();
        Node {
            nlink: if matches!(body, Body::Dir { .. }) {
                2
            } else {
                1
            },
            body,
            perm,
            uid: req.uid(),
            gid: req.gid(),
            rdev: 0,
            open: 0,
            atime: now,
            mtime: now,
            ctime: now,
        }
    }

    fn kind(&self) -> FileType {
        match &self.body {
            Body::File { .. } => FileType::RegularFile,
            Body::Dir { .. } => FileType::Directory,
            Body::Symlink(_) => FileType::Symlink,
            Body::Special(k) => *k,
        }
    }

    fn size(&self) -> u64 {
        match &self.body {
            Body::File { current, .. } => current.len,
            Body::Dir { entries, .. } => entries.len() as u64,
            Body::Symlink(t) => t.as_os_str().len() as u64,
            Body::Special(_) => 0,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let size = self.size();
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.ctime,
            kind: self.kind(),
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: PAGE as u32,
            flags: 0,
        }
    }
}

struct Handle {
    ino: u64,
    /// The power-on this handle was opened in; handles from an earlier life fail with EIO.
    life: u64,
    append: bool,
}

struct State {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    powered: bool,
    life: u64,
    /// For proving a test has teeth: fsync does nothing, so a cut loses everything since mount.
    ignore_fsync: bool,
    metadata: Metadata,
    counts: PowerCounts,
    /// Cut the power when `counts.mutations` reaches this, instead of serving that operation.
    cut_at_mutation: Option<u64>,
}

type Fallible<T> = Result<T, Errno>;

impl State {
    fn node(&self, ino: u64) -> Fallible<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Fallible<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn powered(&self) -> Fallible<()> {
        if self.powered {
            Ok(())
        } else {
            Err(Errno::EIO)
        }
    }

    /// Count an operation that changes the filesystem, or cut the power instead if this is the
    /// one [`PowerFs::cut_before_mutation`] chose (the operation then fails like every later one).
    fn mutation(&mut self) -> Fallible<()> {
        self.powered()?;
        if self.cut_at_mutation == Some(self.counts.mutations) {
            self.cut_at_mutation = None;
            self.cut();
            return Err(Errno::EIO);
        }
        self.counts.mutations += 1;
        Ok(())
    }

    /// The inode behind a live handle.
    fn handle(&self, fh: FileHandle) -> Fallible<&Handle> {
        self.powered()?;
        match self.handles.get(&fh.0) {
            Some(h) if h.life == self.life => Ok(h),
            Some(_) => Err(Errno::EIO),
            None => Err(Errno::EBADF),
        }
    }

    fn entries(&self, dir: u64) -> Fallible<&BTreeMap<OsString, u64>> {
        match &self.node(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Fallible<&mut BTreeMap<OsString, u64>> {
        match &mut self.node_mut(dir)?.body {
            Body::Dir { entries, .. } => Ok(entries),
            _ => Err(Errno::ENOTDIR),
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Fallible<u64> {
        self.entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno::ENOENT)
    }

    /// Add a new node under `parent` as `name`.
    fn insert(&mut self, parent: u64, name: &OsStr, node: Node) -> Fallible<u64> {
        self.mutation()?;
        if self.entries(parent)?.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let is_dir = matches!(node.body, Body::Dir { .. });
        self.nodes.insert(ino, node);
        self.entries_mut(parent)?.insert(name.to_os_string(), ino);
        let p = self.node_mut(parent)?;
        if is_dir {
            p.nlink += 1;
        }
        p.mtime = SystemTime::now();
        p.ctime = p.mtime;
        Ok(ino)
    }

    /// Drop a name's link to its node; the node goes once no name and no handle holds it.
    fn unlink_node(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.nlink = match n.body {
                Body::Dir { .. } => 0,
                _ => n.nlink.saturating_sub(1),
            };
            n.ctime = SystemTime::now();
            // Under the strict model a cut may bring the name back: keep the node.
            if n.nlink == 0 && n.open == 0 && self.metadata == Metadata::Immediate {
                self.nodes.remove(&ino);
            }
        }
    }

    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Fallible<()> {
        self.mutation()?;
        self.remove_entry(parent, name, dir)
    }

    /// [`State::remove`] as one part of another operation (a rename over an existing name), which
    /// counted itself.
    fn remove_entry(&mut self, parent: u64, name: &OsStr, dir: bool) -> Fallible<()> {
        let ino = self.lookup(parent, name)?;
        match (&self.node(ino)?.body, dir) {
            (Body::Dir { entries, .. }, true) if !entries.is_empty() => {
                return Err(Errno::ENOTEMPTY)
            }
            (Body::Dir { .. }, true) => {
                // Saturating: a cut under the strict model puts entries back, not link counts.
                let p = self.node_mut(parent)?;
                p.nlink = p.nlink.saturating_sub(1);
            }
            (Body::Dir { .. }, false) => return Err(Errno::EISDIR),
            (_, true) => return Err(Errno::ENOTDIR),
            (_, false) => {}
        }
        self.entries_mut(parent)?.remove(name);
        self.unlink_node(ino);
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Fallible<()> {
        self.mutation()?;
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            return Err(Errno::EINVAL);
        }
        let ino = self.lookup(parent, name)?;
        let moving_dir = matches!(self.node(ino)?.body, Body::Dir { .. });
        if let Ok(target) = self.lookup(new_parent, new_name) {
            if target == ino {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            let target_dir = matches!(self.node(target)?.body, Body::Dir { .. });
            match (moving_dir, target_dir) {
                (true, false) => return Err(Errno::ENOTDIR),
                (false, true) => return Err(Errno::EISDIR),
                _ => {}
            }
            self.remove_entry(new_parent, new_name, target_dir)?;
        }
        self.entries_mut(parent)?.remove(name);
        self.entries_mut(new_parent)?
            .insert(new_name.to_os_string(), ino);
        if moving_dir {
            if let Body::Dir { parent: p, .. } = &mut self.node_mut(ino)?.body {
                *p = new_parent;
            }
            let p = self.node_mut(parent)?;
            p.nlink = p.nlink.saturating_sub(1);
            self.node_mut(new_parent)?.nlink += 1;
        }
        let now = SystemTime::now();
        for dir in [parent, new_parent] {
            let d = self.node_mut(dir)?;
            d.mtime = now;
            d.ctime = now;
        }
        self.node_mut(ino)?.ctime = now;
        Ok(())
    }

    fn open(&mut self, ino: u64, flags: OpenFlags) -> Fallible<u64> {
        self.powered()?;
        let node = self.node_mut(ino)?;
        node.open += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(
            fh,
            Handle {
                ino,
                life: self.life,
                append: flags.0 & libc::O_APPEND != 0,
            },
        );
        Ok(fh)
    }

    fn release(&mut self, fh: FileHandle) {
        if let Some(h) = self.handles.remove(&fh.0) {
            if let Some(n) = self.nodes.get_mut(&h.ino) {
                n.open = n.open.saturating_sub(1);
                if n.nlink == 0 && n.open == 0 && self.metadata == Metadata::Immediate {
                    self.nodes.remove(&h.ino);
                }
            }
        }
    }

    fn file_mut(&mut self, ino: u64) -> Fallible<(&mut Content, &mut Content)> {
        match &mut self.node_mut(ino)?.body {
            Body::File { current, durable } => Ok((current, durable)),
            Body::Dir { .. } => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        }
    }

    fn write(&mut self, fh: FileHandle, offset: u64, data: &[u8]) -> Fallible<u32> {
        let (ino, append) = {
            let h = self.handle(fh)?;
            (h.ino, h.append)
        };
        self.mutation()?;
        let (current, _) = self.file_mut(ino)?;
        let at = if append { current.len } else { offset };
        current.write(at, data);
        let n = self.node_mut(ino)?;
        n.mtime = SystemTime::now();
        n.ctime = n.mtime;
        self.counts.writes += 1;
        Ok(data.len() as u32)
    }

    fn fsync(&mut self, ino: u64, fh: FileHandle) -> Fallible<()> {
        let ino = self.handle(fh).map(|h| h.ino).unwrap_or(ino);
        self.mutation()?;
        let ignore = self.ignore_fsync;
        if let Ok((current, durable)) = self.file_mut(ino) {
            if !ignore {
                *durable = current.clone();
            }
        }
        self.counts.fsyncs += 1;
        Ok(())
    }

    fn cut(&mut self) {
        self.powered = false;
        self.counts.cuts += 1;
        let strict = self.metadata == Metadata::OnDirectoryFsync;
        for node in self.nodes.values_mut() {
            if let Body::Dir {
                entries,
                durable_entries,
                ..
            } = &mut node.body
            {
                if strict && entries != durable_entries {
                    self.counts.dirs_reverted += 1;
                    *entries = durable_entries.clone();
                }
            }
            if let Body::File { current, durable } = &mut node.body {
                if !current.same_as(durable) {
                    self.counts.files_reverted += 1;
                    self.counts.bytes_discarded += current.len;
                    *current = durable.clone();
                }
            }
        }
    }
}

/// The FUSE side: every call locks the state, does its work, replies.
struct PowerFsServer {
    state: Arc<Mutex<State>>,
}

impl PowerFsServer {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic in one call must not wedge the mount for the rest of the test.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry(&self, reply: ReplyEntry, r: Fallible<u64>) {
        let s = self.state();
        match r.and_then(|ino| Ok(s.node(ino)?.attr(ino))) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn empty(reply: ReplyEmpty, r: Fallible<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

fn perm_of(mode: u32, umask: u32) -> u16 {
    (mode & !umask & 0o7777) as u16
}

impl Filesystem for PowerFsServer {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = {
            let s = self.state();
            s.powered().and_then(|_| s.lookup(parent.0, name))
        };
        self.entry(reply, r);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = self.state();
        match s.powered().and_then(|_| s.node(ino.0)) {
            Ok(n) => reply.attr(&TTL, &n.attr(ino.0)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = self.state();
        let r = (|| {
            s.powered()?;
            if let Some(fh) = fh {
                s.handle(fh)?;
            }
            s.mutation()?;
            if let Some(size) = size {
                s.file_mut(ino.0)?.0.set_len(size);
            }
            let n = s.node_mut(ino.0)?;
            if let Some(mode) = mode {
                n.perm = (mode & 0o7777) as u16;
            }
            if let Some(uid) = uid {
                n.uid = uid;
            }
            if let Some(gid) = gid {
                n.gid = gid;
            }
            if let Some(t) = atime {
                n.atime = time(t);
            }
            if let Some(t) = mtime {
                n.mtime = time(t);
            } else if size.is_some() {
                n.mtime = SystemTime::now();
            }
            n.ctime = SystemTime::now();
            Ok(n.attr(ino.0))
        })();
        match r {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let s = self.state();
        match s.powered().and_then(|_| s.node(ino.0)).map(|n| &n.body) {
            Ok(Body::Symlink(t)) => reply.data(t.as_os_str().as_encoded_bytes()),
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let body = match mode & libc::S_IFMT {
            libc::S_IFREG => Body::File {
                current: Content::default(),
                durable: Content::default(),
            },
            libc::S_IFSOCK => Body::Special(FileType::Socket),
            libc::S_IFIFO => Body::Special(FileType::NamedPipe),
            _ => return reply.error(Errno::EPERM),
        };
        let mut node = Node::new(body, perm_of(mode, umask), req);
        node.rdev = rdev;
        let r = self.state().insert(parent.0, name, node);
        self.entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let body = Body::Dir {
            parent: parent.0,
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
        };
        let node = Node::new(body, perm_of(mode, umask), req);
        let r = self.state().insert(parent.0, name, node);
        self.entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.state().remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.state().remove(parent.0, name, true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let node = Node::new(Body::Symlink(target.to_path_buf()), 0o777, req);
        let r = self.state().insert(parent.0, link_name, node);
        self.entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.state()
                .rename(parent.0, name, newparent.0, newname, flags),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut s = self.state();
        let r = s.node(ino.0).map(|n| n.kind()).and_then(|k| match k {
            FileType::RegularFile => s.open(ino.0, flags),
            FileType::Directory => Err(Errno::EISDIR),
            _ => Err(Errno::EINVAL),
        });
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = self.state();
        let r = s.handle(fh).and_then(|h| match &s.node(h.ino)?.body {
            Body::File { current, .. } => Ok(current.read(offset, size)),
            _ => Err(Errno::EISDIR),
        });
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.state().write(fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2): not a durability request.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.state().fsync(ino.0, fh));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = self.state();
        match s.powered().and_then(|_| s.entries(ino.0)) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.state();
        let listing = (|| {
            s.powered()?;
            let Body::Dir {
                parent, entries, ..
            } = &s.node(ino.0)?.body
            else {
                return Err(Errno::ENOTDIR);
            };
            let mut all = vec![
                (ino.0, FileType::Directory, OsString::from(".")),
                (*parent, FileType::Directory, OsString::from("..")),
            ];
            for (name, child) in entries {
                all.push((*child, s.node(*child)?.kind(), name.clone()));
            }
            Ok(all)
        })();
        match listing {
            Ok(all) => {
                for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        let r = s.mutation().and_then(|_| {
            if let Body::Dir {
                entries,
                durable_entries,
                ..
            } = &mut s.node_mut(ino.0)?.body
            {
                *durable_entries = entries.clone();
            }
            s.counts.dir_fsyncs += 1;
            Ok(())
        });
        empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let s = self.state();
        if let Err(e) = s.powered() {
            return reply.error(e);
        }
        let used: u64 = s
            .nodes
            .values()
            .map(|n| n.size().div_ceil(PAGE as u64))
            .sum();
        let blocks = 1 << 20; // 4 GiB of 4 KiB blocks: plenty, never full.
        reply.statfs(
            blocks,
            blocks - used.min(blocks),
            blocks - used.min(blocks),
            1 << 20,
            (1 << 20) - s.nodes.len() as u64,
            PAGE as u32,
            255,
            PAGE as u32,
        );
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let s = self.state();
        empty(reply, s.powered().and_then(|_| s.node(ino.0).map(|_| ())));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let body = Body::File {
            current: Content::default(),
            durable: Content::default(),
        };
        let node = Node::new(body, perm_of(mode, umask), req);
        let mut s = self.state();
        let r = s.insert(parent.0, name, node).and_then(|ino| {
            let fh = s.open(ino, OpenFlags(flags))?;
            Ok((s.node(ino)?.attr(ino), fh))
        });
        match r {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let mut s = self.state();
        let r = (|| {
            let ino = s.handle(fh)?.ino;
            if mode != 0 {
                return Err(Errno::EOPNOTSUPP);
            }
            s.mutation()?;
            let (current, _) = s.file_mut(ino)?;
            if offset + length > current.len {
                current.set_len(offset + length);
            }
            Ok(())
        })();
        empty(reply, r);
    }
}

/// A [`PowerFs`] mounted on a directory, served from a background thread of this process.
/// Unmounted when dropped (stop everything that uses it first).
pub struct PowerFs {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    session: Option<BackgroundSession>,
}

impl PowerFs {
    /// Why this machine cannot mount a [`PowerFs`], if it cannot even try (no `/dev/fuse`).
    pub fn unavailable() -> Option<String> {
        if !Path::new("/dev/fuse").exists() {
            return Some("/dev/fuse does not exist on this machine (no FUSE support)".into());
        }
        None
    }

    /// Mount an empty filesystem on `mountpoint` (an existing empty directory), with LazyFS's
    /// metadata model ([`Metadata::Immediate`]). The error says why mounting failed (no
    /// `/dev/fuse`, not root and no `fusermount3`, a kernel without FUSE).
    pub fn mount(mountpoint: &Path) -> Result<PowerFs, String> {
        Self::mount_with(mountpoint, Metadata::Immediate)
    }

    /// [`PowerFs::mount`] with a choice of metadata model.
    pub fn mount_with(mountpoint: &Path, metadata: Metadata) -> Result<PowerFs, String> {
        if let Some(why) = Self::unavailable() {
            return Err(why);
        }
        use std::os::unix::fs::MetadataExt;
        let owner =
            std::fs::metadata(mountpoint).map_err(|e| format!("{}: {e}", mountpoint.display()))?;
        let root = Node {
            body: Body::Dir {
                parent: 1,
                entries: BTreeMap::new(),
                durable_entries: BTreeMap::new(),
            },
            perm: 0o755,
            uid: owner.uid(),
            gid: owner.gid(),
            rdev: 0,
            nlink: 2,
            open: 0,
            atime: SystemTime::now(),
            mtime: SystemTime::now(),
            ctime: SystemTime::now(),
        };
        let state = Arc::new(Mutex::new(State {
            nodes: HashMap::from([(1, root)]),
            next_ino: 2,
            handles: HashMap::new(),
            next_fh: 1,
            powered: true,
            life: 0,
            ignore_fsync: false,
            metadata,
            counts: PowerCounts::default(),
            cut_at_mutation: None,
        }));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("polyphony-powerfs".into()),
            MountOption::Subtype("powerfs".into()),
            MountOption::DefaultPermissions,
            MountOption::RW,
        ];
        config.n_threads = Some(2);
        let fs = PowerFsServer {
            state: state.clone(),
        };
        let session = fuser::spawn_mount(fs, mountpoint, &config).map_err(|e| {
            format!(
                "mounting a FUSE filesystem on {} failed: {e} (needs root, or fusermount3 from \
                 Debian's fuse3)",
                mountpoint.display()
            )
        })?;
        Ok(PowerFs {
            state,
            mountpoint: mountpoint.to_path_buf(),
            session: Some(session),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Pull the plug: every file reverts to what was last fsynced, and every operation fails with
    /// EIO until [`PowerFs::power_on`].
    pub fn cut(&self) {
        self.state().cut();
    }

    /// Power back on: serve the reverted state. Handles opened before the cut stay dead.
    pub fn power_on(&self) {
        let mut s = self.state();
        s.life += 1;
        s.powered = true;
    }

    /// Cut the power just before the `n`-th operation that changes the filesystem from now on
    /// (0: the very next), instead of serving it: that operation fails with EIO, as does every
    /// later one until [`PowerFs::power_on`]. `None` withdraws a cut not yet reached. With the
    /// count of an uncut run ([`PowerCounts::mutations`]), a test can cut at every point of a short
    /// operation in turn, where a cut at a random instant would rarely land inside a window of a
    /// few operations. Other processes and threads on the mount count too.
    pub fn cut_before_mutation(&self, n: Option<u64>) {
        let mut s = self.state();
        s.cut_at_mutation = n.map(|n| s.counts.mutations + n);
    }

    /// For proving a test has teeth: while set, fsync makes nothing durable, so a cut throws away
    /// every write since the file was created.
    pub fn ignore_fsync(&self, ignore: bool) {
        self.state().ignore_fsync = ignore;
    }

    /// What it has done so far.
    pub fn counts(&self) -> PowerCounts {
        self.state().counts
    }
}

impl Drop for PowerFs {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if let Err(e) = session.umount_and_join() {
                eprintln!(
                    "powerfs: unmounting {} failed: {e}",
                    self.mountpoint.display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_writes_reads_and_truncates_across_pages() {
        let mut c = Content::default();
        c.write(4090, b"0123456789");
        assert_eq!(c.len, 4100);
        assert_eq!(c.read(4090, 10), b"0123456789");
        assert_eq!(c.read(0, 4), [0, 0, 0, 0]);
        let durable = c.clone();
        c.write(4095, b"X");
        assert_eq!(durable.read(4095, 1), b"5", "the durable copy is untouched");
        assert!(!c.same_as(&durable));
        c.set_len(4093);
        c.set_len(4100);
        assert_eq!(c.read(4090, 10), b"012\0\0\0\0\0\0\0");
        assert_eq!(c.read(5000, 10), b"");
    }
}
