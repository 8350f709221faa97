//! The seccomp allow-list: parsed from `broker/seccomp/allowlist.toml` (compiled into the
//! binary), turned into BPF with `seccompiler`, installed on every thread (TSYNC).
//!
//! Two filters are installed. The main one allows the listed calls (with their argument
//! conditions) and refuses everything else with EPERM (or kills the process). The second
//! answers `clone3` with ENOSYS: its flags live in a struct seccomp cannot read, so glibc is
//! made to fall back to `clone`, whose namespace flags the main filter does check. When
//! several filters apply, the kernel takes the most restrictive answer, so allowing
//! `clone3` in the first filter and refusing it in the second yields ENOSYS.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::Deserialize;

use super::config::{FabricNeeds, SeccompViolation};
use super::syscalls::{lookup, Lookup};
use super::HardenError;

/// The declarative allow-list, embedded at build time.
pub const ALLOWLIST_TOML: &str = include_str!("../../seccomp/allowlist.toml");

/// One `[[syscall]]` entry of the allow-list.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Syscall name without `SYS_`.
    pub name: String,
    /// Why memgated needs it.
    pub why: String,
    /// Alternatives; each is a list of conditions that must all hold.
    #[serde(default)]
    pub when: Vec<Vec<Condition>>,
    /// Fabrics for which the entry applies (all when empty).
    #[serde(default)]
    pub fabrics: Vec<String>,
}

/// An integer or a symbolic constant name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A literal.
    Int(u64),
    /// A name resolved by [`constant`].
    Name(String),
}

/// Argument width: 32-bit (`int` arguments) or 64-bit.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Width {
    /// Compare the low 32 bits only (C `int` arguments).
    #[default]
    Dword,
    /// Compare all 64 bits.
    Qword,
}

/// `(arg & mask) == eq`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Argument index, 0..=5.
    pub arg: u8,
    /// Expected value.
    pub eq: Value,
    /// Optional mask applied first.
    #[serde(default)]
    pub mask: Option<Value>,
    /// Argument width.
    #[serde(default)]
    pub width: Width,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowList {
    syscall: Vec<Entry>,
}

/// Parses the embedded allow-list.
pub fn entries() -> Result<Vec<Entry>, HardenError> {
    let list: AllowList = toml::from_str(ALLOWLIST_TOML)
        .map_err(|e| HardenError::AllowList(format!("parse: {e}")))?;
    Ok(list.syscall)
}

/// Every CLONE_NEW* flag.
const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | 0x80) as u64; // CLONE_NEWTIME

/// Symbolic constants the allow-list may use.
fn constant(name: &str) -> Option<u64> {
    let v = match name {
        "AF_UNIX" => libc::AF_UNIX as u64,
        "AF_INET" => libc::AF_INET as u64,
        "AF_INET6" => libc::AF_INET6 as u64,
        "SOCK_STREAM" => libc::SOCK_STREAM as u64,
        "SOCK_DGRAM" => libc::SOCK_DGRAM as u64,
        "SOCK_SEQPACKET" => libc::SOCK_SEQPACKET as u64,
        "SOCK_TYPE_MASK" => 0xf,
        "CLONE_NS_FLAGS" => CLONE_NS_FLAGS,
        "PR_SET_NAME" => libc::PR_SET_NAME as u64,
        "PR_GET_NAME" => libc::PR_GET_NAME as u64,
        "PR_CAPBSET_READ" => libc::PR_CAPBSET_READ as u64,
        "PR_GET_NO_NEW_PRIVS" => libc::PR_GET_NO_NEW_PRIVS as u64,
        "PR_GET_SECCOMP" => libc::PR_GET_SECCOMP as u64,
        "PR_GET_DUMPABLE" => libc::PR_GET_DUMPABLE as u64,
        "PR_GET_KEEPCAPS" => libc::PR_GET_KEEPCAPS as u64,
        "PR_GET_AUXV" => 0x4155_5856, // "AUXV", Linux 6.4

        "SELF_PID" => u64::from(std::process::id()),
        _ => return None,
    };
    Some(v)
}

fn resolve(v: &Value, syscall: &str) -> Result<u64, HardenError> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Name(n) => constant(n)
            .ok_or_else(|| HardenError::AllowList(format!("{syscall}: unknown constant {n:?}"))),
    }
}

fn condition(c: &Condition, syscall: &str) -> Result<SeccompCondition, HardenError> {
    let eq = resolve(&c.eq, syscall)?;
    let len = match c.width {
        Width::Dword => SeccompCmpArgLen::Dword,
        Width::Qword => SeccompCmpArgLen::Qword,
    };
    let op = match &c.mask {
        Some(m) => SeccompCmpOp::MaskedEq(resolve(m, syscall)?),
        None => SeccompCmpOp::Eq,
    };
    SeccompCondition::new(c.arg, len, op, eq)
        .map_err(|e| HardenError::AllowList(format!("{syscall}: condition: {e}")))
}

fn target_arch() -> Result<TargetArch, HardenError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| HardenError::AllowList(format!("architecture: {e}")))
}

/// The compiled filters and what they contain.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// BPF programs in installation order.
    pub programs: Vec<BpfProgram>,
    /// Number of syscalls the main filter allows (with or without conditions).
    pub allowed_syscalls: usize,
    /// Number of argument rules (alternatives) in the main filter.
    pub argument_rules: usize,
}

/// Compiles the allow-list for a fabric and a violation action.
pub fn compile(fabric: FabricNeeds, action: SeccompViolation) -> Result<Compiled, HardenError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut argument_rules = 0;
    for e in entries()? {
        if e.why.trim().is_empty() {
            return Err(HardenError::AllowList(format!("{}: empty `why`", e.name)));
        }
        if !e.fabrics.is_empty() && !e.fabrics.iter().any(|f| f == fabric.as_str()) {
            continue;
        }
        let nr = match lookup(&e.name) {
            Lookup::Number(nr) => nr,
            Lookup::AbsentOnArch => continue,
            Lookup::Unknown => {
                return Err(HardenError::AllowList(format!(
                    "unknown syscall {:?}",
                    e.name
                )))
            }
        };
        let mut chain = Vec::new();
        for alt in &e.when {
            let conds = alt
                .iter()
                .map(|c| condition(c, &e.name))
                .collect::<Result<Vec<_>, _>>()?;
            chain.push(
                SeccompRule::new(conds)
                    .map_err(|err| HardenError::AllowList(format!("{}: {err}", e.name)))?,
            );
        }
        argument_rules += chain.len();
        if rules.insert(nr, chain).is_some() {
            return Err(HardenError::AllowList(format!("{} listed twice", e.name)));
        }
    }
    let allowed_syscalls = rules.len();
    let mismatch = match action {
        SeccompViolation::Errno => SeccompAction::Errno(libc::EPERM as u32),
        SeccompViolation::Kill => SeccompAction::KillProcess,
    };
    let arch = target_arch()?;
    let main = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .map_err(|e| HardenError::AllowList(format!("filter: {e}")))?;
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| HardenError::AllowList(format!("clone3 filter: {e}")))?;
    // The clone3 filter goes in first: once the main filter is installed, seccomp() itself
    // is refused, so nothing can be added after it.
    let programs = [clone3, main]
        .into_iter()
        .map(|f| BpfProgram::try_from(f).map_err(|e| HardenError::AllowList(format!("bpf: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Compiled {
        programs,
        allowed_syscalls,
        argument_rules,
    })
}

/// Installs one program on every thread of the process, with logging of refusals.
fn install_one(program: &BpfProgram, log: bool) -> Result<(), HardenError> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| HardenError::AllowList("BPF program too long".into()))?,
        // seccompiler's sock_filter has the kernel's layout (u16, u8, u8, u32).
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    let mut flags = libc::SECCOMP_FILTER_FLAG_TSYNC;
    if log {
        flags |= libc::SECCOMP_FILTER_FLAG_LOG;
    }
    // SAFETY: `prog` points to `program`, which outlives the call; the kernel copies the
    // filter before returning. The call takes no other pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    match rc {
        0 => Ok(()),
        rc if rc > 0 => Err(HardenError::SeccompTsync(rc as i32)),
        _ => Err(HardenError::Syscall(
            "seccomp(SECCOMP_SET_MODE_FILTER)",
            std::io::Error::last_os_error(),
        )),
    }
}

/// Installs the compiled filters (no_new_privs must already be set, or CAP_SYS_ADMIN held).
pub fn install(compiled: &Compiled) -> Result<(), HardenError> {
    for p in &compiled.programs {
        install_one(p, true)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_compiles_and_documents_every_entry() {
        let entries = entries().expect("allow-list parses");
        for e in &entries {
            assert!(!e.why.trim().is_empty(), "{} has no reason", e.name);
            assert_ne!(lookup(&e.name), Lookup::Unknown, "{} unknown", e.name);
        }
        let soft = compile(FabricNeeds::Soft, SeccompViolation::Errno).expect("soft");
        let stock = compile(FabricNeeds::VerbsStockKernel, SeccompViolation::Kill).expect("stock");
        assert_eq!(soft.programs.len(), 2);
        assert_eq!(
            stock.allowed_syscalls,
            soft.allowed_syscalls + 1,
            "ptrace only for stock"
        );
        assert!(soft.argument_rules >= 5);
    }

    #[test]
    fn forbidden_syscalls_are_not_listed() {
        let names: Vec<String> = entries()
            .expect("parses")
            .into_iter()
            .map(|e| e.name)
            .collect();
        for bad in [
            "execve",
            "execveat",
            "mount",
            "umount2",
            "pivot_root",
            "chroot",
            "bpf",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "process_vm_writev",
            "process_vm_readv",
            "userfaultfd",
            "keyctl",
            "unshare",
            "setns",
            "seccomp",
            "setresuid",
            "capset",
            "kill",
            "pidfd_getfd",
        ] {
            assert!(!names.iter().any(|n| n == bad), "{bad} must not be allowed");
        }
    }
}
