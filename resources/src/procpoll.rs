//! Waiting for a change of a pollable `/proc` file: `/proc/sys/kernel/hostname` (a host name
//! was set) and `/proc/self/mountinfo` (this mount namespace's mount table changed). The
//! kernel wakes such a file's pollers with `POLLPRI` (and `POLLERR`) when what it shows
//! changed since the file was opened or the change last reported; procfs sends no inotify
//! events, and no timer is needed.

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// An open pollable `/proc` file.
pub(crate) struct ProcPoll(AsyncFd<OwnedFd>);

impl ProcPoll {
    /// Opens `path`; changes from now on are reported.
    pub(crate) fn open(path: &str) -> std::io::Result<ProcPoll> {
        let fd = OwnedFd::from(std::fs::File::open(path)?);
        // SAFETY: the `OwnedFd` is a valid open descriptor, owned by the `AsyncFd` for its
        // whole life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::PRIORITY) }
            .map_err(std::io::Error::from)?;
        Ok(ProcPoll(fd))
    }

    /// Waits for the next change (each poll that reports one also re-arms the file).
    pub(crate) async fn changed(&self) -> std::io::Result<()> {
        let mut guard = self.0.ready(Interest::PRIORITY).await?;
        guard.clear_ready();
        Ok(())
    }
}
