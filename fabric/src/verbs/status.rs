//! Mapping between the device's numbers and the fabric's types: work-completion status to
//! [`WcStatus`], fabric [`Access`] to memory-region and memory-window access flags.

use crate::{Access, WcStatus};
use rdma_sys::{ibv_access_flags, ibv_wc_status};

/// Map a work completion's status as the fabric reports it. Everything that is neither a
/// success, a flush nor the responder's refusal (remote access error) is a remote
/// operation error: the data did not arrive and the connection is in the error state.
pub(crate) fn wc_status(st: ibv_wc_status::Type) -> WcStatus {
    match st {
        ibv_wc_status::IBV_WC_SUCCESS => WcStatus::Success,
        ibv_wc_status::IBV_WC_REM_ACCESS_ERR => WcStatus::RemoteAccessError,
        ibv_wc_status::IBV_WC_WR_FLUSH_ERR => WcStatus::Flushed,
        _ => WcStatus::RemoteOperationError,
    }
}

/// Human-readable name of a completion status (for errors and events).
pub(crate) fn wc_status_name(st: ibv_wc_status::Type) -> String {
    // SAFETY: ibv_wc_status_str returns a pointer to a static NUL-terminated string for
    // every value (unknown ones included).
    let p = unsafe { rdma_sys::ibv_wc_status_str(st) };
    if p.is_null() {
        return format!("status {st}");
    }
    // SAFETY: non-null, static and NUL-terminated (see above).
    unsafe { std::ffi::CStr::from_ptr(p) }
        .to_string_lossy()
        .into_owned()
}

/// Access flags of the memory region behind one key. The region itself grants no remote
/// access (its own rkey is worthless to a peer); it only allows binding windows, plus local
/// write when a window must allow REMOTE_WRITE (IB spec C10-74).
pub(crate) fn mr_access(key: Access) -> u32 {
    let mut f = ibv_access_flags::IBV_ACCESS_MW_BIND.0;
    if key.contains(Access::REMOTE_WRITE) {
        f |= ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
    }
    f
}

/// Access flags of the memory window that carries a key.
pub(crate) fn mw_access(key: Access) -> u32 {
    let mut f = 0;
    if key.contains(Access::REMOTE_READ) {
        f |= ibv_access_flags::IBV_ACCESS_REMOTE_READ.0;
    }
    if key.contains(Access::REMOTE_WRITE) {
        f |= ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_like_an_rc_queue_pair() {
        assert_eq!(wc_status(ibv_wc_status::IBV_WC_SUCCESS), WcStatus::Success);
        assert_eq!(wc_status(10), WcStatus::RemoteAccessError);
        assert_eq!(wc_status(5), WcStatus::Flushed);
        for st in [
            ibv_wc_status::IBV_WC_REM_OP_ERR,
            ibv_wc_status::IBV_WC_RETRY_EXC_ERR,
            ibv_wc_status::IBV_WC_REM_INV_REQ_ERR,
            ibv_wc_status::IBV_WC_LOC_PROT_ERR,
            ibv_wc_status::IBV_WC_FATAL_ERR,
            999,
        ] {
            assert_eq!(wc_status(st), WcStatus::RemoteOperationError, "{st}");
        }
        assert_eq!(wc_status_name(10), "remote access error");
    }

    #[test]
    fn region_flags_never_grant_remote_access() {
        let remote = ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
            | ibv_access_flags::IBV_ACCESS_REMOTE_ATOMIC.0;
        for a in [Access::REMOTE_READ, Access::READ_WRITE] {
            assert_eq!(mr_access(a) & remote, 0);
            assert_ne!(mr_access(a) & ibv_access_flags::IBV_ACCESS_MW_BIND.0, 0);
        }
        assert_eq!(
            mr_access(Access::REMOTE_READ) & ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0,
            0
        );
        assert_eq!(
            mw_access(Access::REMOTE_READ),
            ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
        );
        assert_eq!(
            mw_access(Access::READ_WRITE),
            ibv_access_flags::IBV_ACCESS_REMOTE_READ.0
                | ibv_access_flags::IBV_ACCESS_REMOTE_WRITE.0
        );
    }
}
