//! Thin, checked wrappers around rdma_cm and libibverbs calls shared by both sides:
//! device discovery (a clear "no RDMA device" error), event channels with time-outs,
//! socket address conversion, and zero-initialised work requests.

use crate::FabricError;
use rdma_sys::*;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The remote address of a connected (or connecting) cm id as `IP:PORT`, for the audit
/// of a failed set-up; `unknown` when it is not an IP address.
pub(crate) fn peer_label(id: *mut rdma_cm_id) -> String {
    if id.is_null() {
        return "unknown".into();
    }
    // SAFETY: id is a live cm id of the caller's connection; rdma_cm filled its route's
    // destination address (a sockaddr_storage-sized union) when the request arrived.
    let sa: &libc::sockaddr = unsafe { rdma_get_peer_addr(&*id) };
    let sa_ptr: *const libc::sockaddr = sa;
    match i32::from(sa.sa_family) {
        libc::AF_INET => {
            // SAFETY: the family says sockaddr_in, which fits in the union.
            let sin = unsafe { &*sa_ptr.cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            SocketAddr::from((ip, u16::from_be(sin.sin_port))).to_string()
        }
        libc::AF_INET6 => {
            // SAFETY: the family says sockaddr_in6, which fits in the union.
            let sin6 = unsafe { &*sa_ptr.cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            SocketAddr::from((ip, u16::from_be(sin6.sin6_port))).to_string()
        }
        _ => "unknown".into(),
    }
}

/// The "no RDMA device" error with a hint.
pub(crate) fn no_device(detail: impl std::fmt::Display) -> FabricError {
    FabricError::NoDevice(format!(
        "{detail} (load an RDMA driver, e.g. `modprobe rdma_rxe` and `rdma link add rxe0 type rxe netdev IF`)"
    ))
}

/// Whether an errno from opening the RDMA stack means "there is no device / no support".
pub(crate) fn is_no_device_errno(e: i32) -> bool {
    matches!(
        e,
        libc::ENOSYS | libc::ENODEV | libc::ENOENT | libc::ENXIO | libc::EADDRNOTAVAIL
    )
}

/// Fail with [`FabricError::NoDevice`] unless at least one RDMA device is present.
pub(crate) fn require_device() -> Result<(), FabricError> {
    let mut n: i32 = 0;
    // SAFETY: n is a valid out-pointer; the returned list is freed below.
    let list = unsafe { ibv_get_device_list(&mut n) };
    let err = io::Error::last_os_error();
    if list.is_null() {
        return Err(no_device(format!("listing devices failed: {err}")));
    }
    // SAFETY: list came from ibv_get_device_list and is freed once.
    unsafe { ibv_free_device_list(list) };
    if n <= 0 {
        return Err(no_device("the device list is empty"));
    }
    Ok(())
}

/// An owned rdma_cm event channel (non-blocking fd).
pub(crate) struct Channel(pub(crate) *mut rdma_event_channel);

// SAFETY: the channel is a kernel fd wrapper; librdmacm calls on it are thread-safe and
// each Channel is used by one thread at a time.
unsafe impl Send for Channel {}
// SAFETY: see Send; shared references only read the fd.
unsafe impl Sync for Channel {}

impl Channel {
    pub(crate) fn new() -> Result<Channel, FabricError> {
        // SAFETY: plain constructor; a null return is checked.
        let ch = unsafe { rdma_create_event_channel() };
        if ch.is_null() {
            let e = io::Error::last_os_error();
            if is_no_device_errno(e.raw_os_error().unwrap_or(0)) {
                return Err(no_device(format!(
                    "cannot open the RDMA connection manager: {e}"
                )));
            }
            return Err(verbs_err("rdma_create_event_channel", e));
        }
        let c = Channel(ch);
        set_nonblocking(c.fd())?;
        Ok(c)
    }

    pub(crate) fn fd(&self) -> RawFd {
        // SAFETY: self.0 is a live channel.
        unsafe { (*self.0).fd }
    }

    /// The next event, if one is ready (non-blocking). The caller must ack it.
    pub(crate) fn try_get(&self) -> Option<*mut rdma_cm_event> {
        let mut ev = std::ptr::null_mut();
        // SAFETY: channel is live; ev is a valid out-pointer.
        let r = unsafe { rdma_get_cm_event(self.0, &mut ev) };
        (r == 0 && !ev.is_null()).then_some(ev)
    }

    /// Wait up to `timeout` for the next event. The caller must ack it.
    pub(crate) fn wait(
        &self,
        timeout: Duration,
        what: &'static str,
    ) -> Result<*mut rdma_cm_event, FabricError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.try_get() {
                return Ok(ev);
            }
            if !poll_in(self.fd(), Some(deadline))? {
                return Err(FabricError::Timeout(what));
            }
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: every id on this channel was destroyed before (owners drop first).
        unsafe { rdma_destroy_event_channel(self.0) };
    }
}

/// An error from a verbs / rdma_cm call.
/// The first steps of both sides: the address of an `rdma:` endpoint, a device to use, an
/// event channel and a reliable-connection cm id on it. The caller owns the id and must
/// destroy it before the channel.
pub(crate) fn open_id(
    endpoint: &crate::Endpoint,
) -> Result<(SocketAddr, Channel, *mut rdma_cm_id), FabricError> {
    let crate::Endpoint::Rdma(addr) = endpoint else {
        return Err(FabricError::BadEndpoint(endpoint.to_string()));
    };
    require_device()?;
    let channel = Channel::new()?;
    let mut id = std::ptr::null_mut();
    // SAFETY: channel is live; id is a valid out-pointer.
    check("rdma_create_id", unsafe {
        rdma_create_id(
            channel.0,
            &mut id,
            std::ptr::null_mut(),
            rdma_port_space::RDMA_PS_TCP,
        )
    })?;
    Ok((*addr, channel, id))
}

pub(crate) fn verbs_err(call: &str, e: io::Error) -> FabricError {
    FabricError::Verbs(format!("{call}: {e}"))
}

/// The errno of a failed call as an error.
pub(crate) fn last(call: &str) -> FabricError {
    verbs_err(call, io::Error::last_os_error())
}

/// Turn a return code (0 = success, else -1 with errno or a positive errno) into a Result.
pub(crate) fn check(call: &str, rc: i32) -> Result<(), FabricError> {
    match rc {
        0 => Ok(()),
        r if r > 0 => Err(verbs_err(call, io::Error::from_raw_os_error(r))),
        _ => Err(last(call)),
    }
}

pub(crate) fn set_nonblocking(fd: RawFd) -> Result<(), FabricError> {
    // SAFETY: fcntl on an fd we own; no pointers involved.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if fl < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(last("fcntl(O_NONBLOCK)"));
    }
    Ok(())
}

/// poll(2) one fd for readability until `deadline` (forever with None). Ok(false) on
/// time-out.
pub(crate) fn poll_in(fd: RawFd, deadline: Option<Instant>) -> Result<bool, FabricError> {
    crate::fdwait::wait(fd, libc::POLLIN, deadline).map_err(|e| verbs_err("poll", e))
}

/// A socket address in the C layout rdma_cm takes.
pub(crate) fn sockaddr(a: &SocketAddr) -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, which is suitably aligned.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage, which is suitably aligned.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    ss
}

/// An all-zero send work request (every field a null pointer or zero).
pub(crate) fn zero_send_wr() -> ibv_send_wr {
    // SAFETY: ibv_send_wr is a C struct of integers, raw pointers and unions of those; the
    // all-zero bit pattern is valid for each.
    unsafe { std::mem::zeroed() }
}

/// An all-zero work completion.
pub(crate) fn zero_wc() -> ibv_wc {
    // SAFETY: ibv_wc is plain C data; all-zero is valid.
    unsafe { std::mem::zeroed() }
}

/// Private data of a connection event, as bytes (empty when there is none).
///
/// # Safety
/// `ev` must be a live, not yet acknowledged event.
pub(crate) unsafe fn private_data<'a>(ev: *mut rdma_cm_event) -> &'a [u8] {
    // SAFETY: the caller guarantees ev is live; conn is the active member for connection
    // events.
    let conn = unsafe { (*ev).param.conn };
    if conn.private_data.is_null() || conn.private_data_len == 0 {
        return &[];
    }
    // SAFETY: librdmacm keeps private_data_len bytes valid until the event is acked.
    unsafe {
        std::slice::from_raw_parts(
            conn.private_data.cast::<u8>(),
            conn.private_data_len as usize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_layout() {
        let a: SocketAddr = "192.0.2.1:7471".parse().unwrap();
        let ss = sockaddr(&a);
        // SAFETY: sockaddr() wrote a sockaddr_in for a V4 address.
        let sin = unsafe { *(&ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
        assert_eq!(sin.sin_family as i32, libc::AF_INET);
        assert_eq!(u16::from_be(sin.sin_port), 7471);
        assert_eq!(sin.sin_addr.s_addr.to_ne_bytes(), [192, 0, 2, 1]);
    }

    #[test]
    fn return_codes() {
        assert!(check("x", 0).is_ok());
        let e = check("ibv_thing", libc::EINVAL).unwrap_err().to_string();
        assert!(e.starts_with("ibv_thing: "), "{e}");
        assert!(is_no_device_errno(libc::ENODEV) && is_no_device_errno(libc::ENOSYS));
        assert!(!is_no_device_errno(libc::EPERM));
        assert!(no_device("the device list is empty")
            .to_string()
            .starts_with("no RDMA device: the device list is empty"));
    }
}
