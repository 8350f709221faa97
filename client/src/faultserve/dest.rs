//! Which process a hand-over names, checked against its address space before the fault
//! server trusts it. The pid in a hand-over message is only the restorer's word; the fault
//! server watches that process for exit (and then stops serving) and may kill it when a
//! failed migration cannot poison the missing pages. Both would hurt if the pid were wrong:
//! an unrelated process killed, or the real destination left unserved when the unrelated one
//! exits. So the pid is accepted only if its address space has every handed-over range
//! registered with a userfaultfd in missing mode (`um` in `/proc/PID/smaps`), read through
//! a pidfd opened first so that a reused pid cannot pass.

use std::io::{self, BufRead, BufReader};
use std::os::fd::OwnedFd;

/// Why a hand-over's pid is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum DestCheckError {
    /// The pid is not a valid process id.
    #[error("pid {0} is not a process id")]
    BadPid(i32),
    /// No such process (or no pidfd for it).
    #[error("process {pid}: {source}")]
    NoProcess {
        /// The pid.
        pid: i32,
        /// pidfd_open's error.
        source: io::Error,
    },
    /// Its memory map could not be read (typically: not ours to inspect).
    #[error("reading /proc/{pid}/smaps: {source}")]
    Unreadable {
        /// The pid.
        pid: i32,
        /// The read error.
        source: io::Error,
    },
    /// A handed-over range is not registered with a userfaultfd in that process.
    #[error("process {pid} has no userfaultfd-registered mapping at {addr:#x}: it is not the destination of this hand-over")]
    NotRegistered {
        /// The pid.
        pid: i32,
        /// The destination address that is not registered there.
        addr: u64,
    },
    /// The process exited while it was being checked.
    #[error("process {0} exited while it was being checked")]
    Exited(i32),
}

/// One mapping of `/proc/PID/smaps`: its range and whether it is registered for
/// userfaultfd missing faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Vma {
    start: u64,
    end: u64,
    uffd_missing: bool,
}

/// Parses smaps text into its mappings. Unknown lines are skipped; a header without a
/// `VmFlags` line counts as not registered.
fn parse_smaps(r: impl BufRead) -> io::Result<Vec<Vma>> {
    let mut out: Vec<Vma> = Vec::new();
    for line in r.lines() {
        let line = line?;
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(v) = out.last_mut() {
                v.uffd_missing = flags.split_whitespace().any(|f| f == "um");
            }
            continue;
        }
        // A header: "start-end perms offset dev inode [path]"; field lines start with a
        // capitalised key and a colon.
        let Some((range, _)) = line.split_once(' ') else {
            continue;
        };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        if let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
            out.push(Vma {
                start,
                end,
                uffd_missing: false,
            });
        }
    }
    Ok(out)
}

/// The first of `ranges` (destination `(addr, len)`) not covered by registered mappings.
fn first_unregistered(vmas: &[Vma], ranges: &[(u64, u64)]) -> Option<u64> {
    for &(addr, len) in ranges {
        let end = addr.saturating_add(len);
        let mut at = addr;
        while at < end {
            match vmas
                .iter()
                .find(|v| v.uffd_missing && v.start <= at && at < v.end)
            {
                Some(v) => at = v.end,
                None => return Some(at),
            }
        }
    }
    None
}

fn exited(pidfd: &OwnedFd) -> bool {
    let mut fds = [rustix::event::PollFd::new(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    let now = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
}

/// Opens a pidfd for `pid` and checks that every destination range in `ranges` is
/// registered with a userfaultfd in that process. The pidfd is what the fault server may
/// then watch and signal.
pub fn verify(pid: i32, ranges: &[(u64, u64)]) -> Result<OwnedFd, DestCheckError> {
    let p = rustix::process::Pid::from_raw(pid).ok_or(DestCheckError::BadPid(pid))?;
    let pidfd =
        rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).map_err(|e| {
            DestCheckError::NoProcess {
                pid,
                source: e.into(),
            }
        })?;
    let vmas = std::fs::File::open(format!("/proc/{pid}/smaps"))
        .and_then(|f| parse_smaps(BufReader::new(f)))
        .map_err(|source| DestCheckError::Unreadable { pid, source })?;
    if let Some(addr) = first_unregistered(&vmas, ranges) {
        return Err(DestCheckError::NotRegistered { pid, addr });
    }
    // The pidfd was opened before the read: if that process is still alive, the smaps we
    // read were its own (a pid is not reused while its process lives).
    if exited(&pidfd) {
        return Err(DestCheckError::Exited(pid));
    }
    Ok(pidfd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::Mapping;
    use crate::uffd::Uffd;

    const SMAPS: &str = "\
7f0000000000-7f0000004000 rw-p 00000000 00:00 0 
Size:                 16 kB
VmFlags: rd wr mr mw me ac um 
7f0000004000-7f0000008000 rw-p 00000000 00:00 0 
Size:                 16 kB
VmFlags: rd wr mr mw me ac 
7f0000008000-7f000000c000 rw-p 00000000 00:00 0                          [heap]
VmFlags: rd wr um uw 
";

    #[test]
    fn smaps_flags_are_read_per_mapping() {
        let v = parse_smaps(SMAPS.as_bytes()).unwrap();
        assert_eq!(v.len(), 3);
        assert!(v[0].uffd_missing && !v[1].uffd_missing && v[2].uffd_missing);
        assert_eq!((v[1].start, v[1].end), (0x7f0000004000, 0x7f0000008000));
    }

    #[test]
    fn every_byte_of_every_range_must_be_registered() {
        let v = parse_smaps(SMAPS.as_bytes()).unwrap();
        assert_eq!(first_unregistered(&v, &[(0x7f0000000000, 0x4000)]), None);
        assert_eq!(first_unregistered(&v, &[(0x7f0000008000, 0x4000)]), None);
        assert_eq!(
            first_unregistered(&v, &[(0x7f0000002000, 0x4000)]),
            Some(0x7f0000004000)
        );
        assert_eq!(
            first_unregistered(&v, &[(0x7f0000000000, 0x1000), (0x7f000000c000, 1)]),
            Some(0x7f000000c000)
        );
    }

    #[test]
    fn this_process_passes_only_for_its_registered_range() {
        let m = Mapping::anon(4 * crate::PAGE).unwrap();
        let other = Mapping::anon(crate::PAGE).unwrap();
        let me = std::process::id() as i32;
        let ranges = [(m.addr(), m.len() as u64)];
        assert!(matches!(
            verify(me, &ranges),
            Err(DestCheckError::NotRegistered { .. })
        ));
        // Root (CI) may create a uffd that handles kernel faults; user mode is enough here.
        let uffd = Uffd::create(true, 0).unwrap();
        uffd.register_missing(m.addr(), m.len() as u64).unwrap();
        assert!(verify(me, &ranges).is_ok());
        let both = [ranges[0], (other.addr(), crate::PAGE as u64)];
        match verify(me, &both) {
            Err(DestCheckError::NotRegistered { addr, .. }) => assert_eq!(addr, other.addr()),
            r => panic!("{r:?}"),
        }
        let _ = uffd.unregister(m.addr(), m.len() as u64);
    }

    #[test]
    fn a_process_that_is_gone_is_refused() {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id() as i32;
        c.wait().unwrap();
        assert!(matches!(
            verify(pid, &[(0x1000, 0x1000)]),
            Err(DestCheckError::NoProcess { .. })
        ));
    }
}
