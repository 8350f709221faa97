//! Identity and capabilities: switch to the configured user, keep only the capabilities the
//! fabric needs (in every set, bounding included), set no_new_privs.
//!
//! Capability sets are per thread in Linux, so this runs while the process has a single
//! thread (checked by [`super::apply`]); threads created later inherit the reduced sets.

use std::ffi::CString;

use caps::{CapSet, Capability, CapsHashSet};

use super::config::HardenConfig;
use super::HardenError;

/// The user to switch to, resolved before anything is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: libc::uid_t,
    /// Primary group id (becomes the only group).
    pub gid: libc::gid_t,
}

/// Resolves a user name through the system user database.
pub fn resolve_user(name: &str) -> Result<Ids, HardenError> {
    let cname = CString::new(name).map_err(|_| HardenError::UnknownUser(name.to_string()))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain old data; an all-zero value is valid before getpwnam_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to a live local of the right type; `buf` is large enough
    // for the entry strings and its length is passed.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(HardenError::UnknownUser(name.to_string()));
    }
    Ok(Ids {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Parses capability names from the configuration.
pub fn parse_caps(names: &[String]) -> Result<CapsHashSet, HardenError> {
    names
        .iter()
        .map(|n| {
            caps::to_canonical(n)
                .parse::<Capability>()
                .map_err(|_| HardenError::UnknownCapability(n.clone()))
        })
        .collect()
}

/// The capabilities memgated keeps for this configuration.
pub fn kept_caps(cfg: &HardenConfig) -> Result<CapsHashSet, HardenError> {
    let mut keep = parse_caps(&cfg.extra_caps)?;
    keep.extend(cfg.fabric.capabilities().iter().copied());
    Ok(keep)
}

fn caps_err(what: &'static str) -> impl Fn(caps::errors::CapsError) -> HardenError {
    move |e| HardenError::Capabilities(what, e.to_string())
}

fn check(what: &'static str, rc: libc::c_int) -> Result<(), HardenError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(HardenError::Syscall(what, std::io::Error::last_os_error()))
    }
}

/// Switches to `ids` keeping the permitted set across the uid change (PR_SET_KEEPCAPS),
/// then clears keep-caps again.
fn switch_user(ids: Ids, keep_caps: bool) -> Result<(), HardenError> {
    if keep_caps {
        // SAFETY: prctl with integer arguments only.
        check("prctl(PR_SET_KEEPCAPS, 1)", unsafe {
            libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0)
        })?;
    }
    let groups = [ids.gid];
    // SAFETY: `groups` is a live array of one gid and its length is passed. glibc applies
    // set*id calls to every thread of the process.
    check("setgroups", unsafe { libc::setgroups(1, groups.as_ptr()) })?;
    // SAFETY: integer arguments only.
    check("setresgid", unsafe {
        libc::setresgid(ids.gid, ids.gid, ids.gid)
    })?;
    // SAFETY: integer arguments only.
    check("setresuid", unsafe {
        libc::setresuid(ids.uid, ids.uid, ids.uid)
    })?;
    if keep_caps {
        // SAFETY: prctl with integer arguments only.
        check("prctl(PR_SET_KEEPCAPS, 0)", unsafe {
            libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0)
        })?;
    }
    Ok(())
}

/// What happened to the bounding set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bounding {
    /// Every capability not kept was dropped (or none was there to drop).
    Reduced,
    /// Left as is: the process had no CAP_SETPCAP (needed to drop from it) and nothing in
    /// its permitted set, so it had nothing to keep. It cannot gain a capability except by
    /// executing a privileged program, which no_new_privs forbids when it is set.
    LeftNoSetpcap,
}

impl Bounding {
    /// The wording `--check-hardening` uses.
    pub fn describe(self) -> &'static str {
        match self {
            Bounding::Reduced => "reduced to the kept capabilities",
            Bounding::LeftNoSetpcap => "left as is: no CAP_SETPCAP; nothing to keep",
        }
    }
}

/// Drops every capability not in `keep` from the bounding, ambient, inheritable, permitted
/// and effective sets, switching user first when `run_as` is given.
///
/// An unprivileged process (empty permitted set, so no CAP_SETPCAP) cannot change its
/// bounding set; it is then left alone and the outcome says so rather than failing.
pub fn drop_privileges(keep: &CapsHashSet, run_as: Option<Ids>) -> Result<Bounding, HardenError> {
    // The bounding set needs CAP_SETPCAP in the effective set, so it goes first.
    let bounding = caps::read(None, CapSet::Bounding).map_err(caps_err("read bounding"))?;
    let effective = caps::read(None, CapSet::Effective).map_err(caps_err("read effective"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(caps_err("read permitted"))?;
    let outcome = if bounding.difference(keep).next().is_none() {
        Bounding::Reduced
    } else if !effective.contains(&Capability::CAP_SETPCAP) && permitted.is_empty() {
        Bounding::LeftNoSetpcap
    } else {
        for cap in bounding.difference(keep) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(caps_err("drop bounding"))?;
        }
        Bounding::Reduced
    };
    // Each set is only written when it differs: a service manager that already started
    // memgated with exactly the needed capabilities can then forbid capset(2) outright.
    let read = |set: CapSet| caps::read(None, set).map_err(caps_err("read"));
    if !read(CapSet::Ambient)?.is_empty() {
        caps::clear(None, CapSet::Ambient).map_err(caps_err("clear ambient"))?;
    }
    if !read(CapSet::Inheritable)?.is_empty() {
        caps::clear(None, CapSet::Inheritable).map_err(caps_err("clear inheritable"))?;
    }
    if let Some(ids) = run_as {
        switch_user(ids, !keep.is_empty())?;
    }
    let permitted = read(CapSet::Permitted)?;
    let missing: Vec<String> = keep.difference(&permitted).map(|c| c.to_string()).collect();
    if !missing.is_empty() {
        return Err(HardenError::MissingCapabilities(missing));
    }
    // Effective must be a subset of permitted at every step.
    if read(CapSet::Effective)? != *keep {
        caps::set(None, CapSet::Effective, keep).map_err(caps_err("set effective"))?;
    }
    if permitted != *keep {
        caps::set(None, CapSet::Permitted, keep).map_err(caps_err("set permitted"))?;
    }
    Ok(outcome)
}

/// Sets no_new_privs: execve can never grant privileges again.
pub fn set_no_new_privs() -> Result<(), HardenError> {
    // SAFETY: prctl with integer arguments only.
    check("prctl(PR_SET_NO_NEW_PRIVS)", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harden::config::FabricNeeds;

    #[test]
    fn kept_caps_follow_the_fabric() {
        let soft = kept_caps(&HardenConfig::strict(FabricNeeds::Soft)).expect("soft");
        assert!(soft.is_empty());
        let mut cfg = HardenConfig::strict(FabricNeeds::VerbsStockKernel);
        cfg.extra_caps = vec!["net_bind_service".into()];
        let stock = kept_caps(&cfg).expect("stock");
        assert!(stock.contains(&Capability::CAP_IPC_LOCK));
        assert!(stock.contains(&Capability::CAP_SYS_PTRACE));
        assert!(stock.contains(&Capability::CAP_NET_BIND_SERVICE));
        cfg.extra_caps = vec!["CAP_FLY".into()];
        assert!(matches!(
            kept_caps(&cfg),
            Err(HardenError::UnknownCapability(n)) if n == "CAP_FLY"
        ));
    }

    #[test]
    fn resolves_root_and_rejects_unknown_user() {
        assert_eq!(resolve_user("root").expect("root").uid, 0);
        assert!(resolve_user("memgate-no-such-user").is_err());
    }
}
