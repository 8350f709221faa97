//! Shared fixtures for the admission tests: a real target process running as another
//! uid, requester processes (a small Python program started with setuid/setgid) that
//! open their own pidfd and `/proc/<pid>/mem` fds and send them over a real
//! `SOCK_SEQPACKET` connection, keys, a signed policy and tokens.
#![allow(dead_code)]

pub mod broker;
/// The memgated process plumbing shared with the lifecycle harness.
#[path = "../support/daemon.rs"]
pub mod daemon;
pub mod pipeline;
/// The test key set shared with the lifecycle harness.
#[path = "../support/pki.rs"]
pub mod pki;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration as StdDuration, Instant};

use memgate_policy::token::{self, Claims, Target as TokenTarget};
use memgate_policy::{Access, Policy};
use memgate_proto::transport::recv_frame;
use memgate_proto::{ExportRequest, RegionSelection, RegionSpec, Request};
use rustix::net::{AddressFamily, RecvFlags, SocketAddrUnix, SocketType};
use time::{Duration, OffsetDateTime};

/// Uid of the target process; a requester with this uid may ptrace it.
pub const TARGET_UID: u32 = 61010;
/// A requester uid that may not ptrace the target.
pub const OTHER_UID: u32 = 61011;
/// A third uid, for tokens issued to someone else.
pub const THIRD_UID: u32 = 61012;
/// The broker id (token audience).
pub const BROKER_ID: &str = "memgate-test-broker";

/// The requester program.
pub fn requester_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/requester.py")
}

/// A process running as `uid`, killed on drop.
pub struct Target {
    pub child: Child,
    pub pid: i32,
    pub uid: u32,
}

impl Target {
    /// The target program as `uid`/`uid` (see `target.py`), once it is ready.
    pub fn spawn(uid: u32) -> Target {
        Self::spawn_with(uid, &[])
    }

    /// Like [`Target::spawn`] with `target.py` flags (`--undumpable`, `--exec-on-line`).
    pub fn spawn_with(uid: u32, flags: &[&str]) -> Target {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/target.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(flags)
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn target");
        let pid = i32::try_from(child.id()).expect("pid");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(line.trim(), "ready", "target did not start");
        Target { child, pid, uid }
    }

    /// Sends a line to the target's stdin (`--exec-on-line` then execs).
    pub fn poke(&mut self) {
        if let Some(mut i) = self.child.stdin.take() {
            let _ = i.write_all(b"go\n");
        }
    }

    /// The target's cgroup v2 path, as the broker will see it.
    pub fn cgroup(&self) -> String {
        let text = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid)).expect("cgroup");
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .expect("v2 line")
            .to_string()
    }

    /// Parsed `/proc/<pid>/maps`: (start, end, perms, path).
    pub fn maps(&self) -> Vec<(u64, u64, String, String)> {
        let text = std::fs::read_to_string(format!("/proc/{}/maps", self.pid)).expect("maps");
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let (s, e) = f[0].split_once('-').unwrap();
                (
                    u64::from_str_radix(s, 16).unwrap(),
                    u64::from_str_radix(e, 16).unwrap(),
                    f[1].to_string(),
                    f.get(5).map(|s| s.to_string()).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The mapping named `name` (e.g. `[heap]`), as (start, end).
    pub fn mapping(&self, name: &str) -> (u64, u64) {
        self.maps()
            .into_iter()
            .find(|m| m.3 == name)
            .map(|m| (m.0, m.1))
            .unwrap_or_else(|| panic!("no {name} in target maps"))
    }

    /// The first read-only private file mapping (a library's or the program's text or
    /// constants): (start, end, perms, path).
    pub fn readonly_file_mapping(&self) -> (u64, u64, String, String) {
        self.maps()
            .into_iter()
            .find(|m| m.2 == "r--p" && m.3.starts_with('/'))
            .expect("a read-only file mapping in the target")
    }

    /// The lowest page of the target's stack, as a region list.
    pub fn stack_page(&self) -> RegionSelection {
        let (s, _) = self.mapping("[stack]");
        list(&[(s, 4096)])
    }

    /// Kills and reaps the target.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Issuer, peer and admin keys (the key set shared with the lifecycle harness).
pub use pki::Pki as Keys;

/// Knobs of the test policy.
#[derive(Clone)]
pub struct PolicySpec {
    pub serial: u64,
    pub cgroups: Vec<String>,
    pub uids: Vec<u32>,
    pub access: &'static str,
    pub max_bytes: u64,
    pub max_lease: u64,
    pub mappings: Option<Vec<&'static str>>,
    pub grants_per_uid: u32,
    pub bytes_per_uid: u64,
    pub rps: u32,
}

impl Default for PolicySpec {
    fn default() -> Self {
        PolicySpec {
            serial: 1,
            cgroups: vec!["/**".into()],
            uids: vec![TARGET_UID, OTHER_UID, THIRD_UID],
            access: "read",
            max_bytes: 1 << 30,
            max_lease: 600,
            mappings: None,
            grants_per_uid: 16,
            bytes_per_uid: 1 << 32,
            rps: 1000,
        }
    }
}

/// The policy document text.
pub fn policy_text(keys: &Keys, s: &PolicySpec) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|c| format!("{c:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mappings = s
        .mappings
        .as_ref()
        .map(|m| {
            format!(
                "mappings = [{}]\n",
                list(&m.iter().map(|x| x.to_string()).collect::<Vec<_>>())
            )
        })
        .unwrap_or_default();
    format!(
        "version = 1\nbroker = {BROKER_ID:?}\nserial = {}\n{mappings}\
         [limits]\ngrants_per_uid = {}\nbytes_per_uid = {}\nrequests_per_second_per_uid = {}\n\
         [[issuer]]\nname = \"ops\"\nkey = {:?}\ncgroups = [{}]\nuids = [{}]\naccess = {:?}\n\
         max_bytes = {}\nmax_lease = {}\n",
        s.serial,
        s.grants_per_uid,
        s.bytes_per_uid,
        s.rps,
        keys.issuer.public().to_paserk(),
        list(&s.cgroups),
        s.uids
            .iter()
            .map(|u| u.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        s.access,
        s.max_bytes,
        s.max_lease,
    )
}

/// The parsed policy.
pub fn policy(keys: &Keys, s: &PolicySpec) -> Policy {
    Policy::parse(&policy_text(keys, s)).expect("test policy parses")
}

/// Default claims: `uid` may export read-only from `cgroup` for 10 minutes.
pub fn claims(keys: &Keys, uid: u32, cgroup: &str) -> Claims {
    let now = OffsetDateTime::now_utc();
    Claims {
        iss: "ops".into(),
        sub: uid.to_string(),
        aud: BROKER_ID.into(),
        exp: now + Duration::minutes(5),
        nbf: now - Duration::seconds(5),
        iat: now - Duration::seconds(5),
        jti: token::new_jti(),
        target: TokenTarget {
            cgroup: cgroup.to_string(),
            pid: None,
        },
        access: Access::Read,
        max_bytes: 1 << 30,
        lease: 600,
        peer: keys.peer.public(),
    }
}

/// A token signed by the issuer key.
pub fn mint(keys: &Keys, c: &Claims) -> String {
    token::mint(&keys.issuer, c, None).expect("mint")
}

/// An Export request for `regions`.
pub fn export(token: String, regions: RegionSelection, access: memgate_proto::Access) -> Request {
    Request::Export(ExportRequest {
        token,
        regions,
        access,
        lease_secs: 60,
        revoke_on_disconnect: false,
    })
}

/// What a requester sends with an export: pidfd, mem and maps of the target (the
/// hardened broker cannot open another user's maps itself).
pub const FDS: &str = "pidfd,mem,maps";

/// A read-only Export request for `regions`.
pub fn read_req(token: String, regions: RegionSelection) -> Request {
    export(token, regions, memgate_proto::Access::Read)
}

/// One region list.
pub fn list(regions: &[(u64, u64)]) -> RegionSelection {
    RegionSelection::List(
        regions
            .iter()
            .map(|&(addr, len)| RegionSpec { addr, len })
            .collect(),
    )
}

/// A running requester.
pub struct Requester {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// What a requester reported.
#[derive(Debug)]
pub enum Report {
    /// It could not open one of its fds (the kernel refused): errno.
    OpenError(i32, String),
    /// The reply frame it got.
    Reply(Vec<u8>),
}

impl Requester {
    /// Starts `requester.py` as `uid`/`uid`. With `wait`, it stops after opening its fds
    /// until [`Requester::go`].
    /// The frame is handed over in a file next to `socket` (frames can exceed argv).
    pub fn start(
        uid: u32,
        socket: &Path,
        target: i32,
        fds: &str,
        frame: &[u8],
        wait: bool,
    ) -> Requester {
        let dir = socket.parent().expect("socket dir");
        let frame_file = tempfile::Builder::new()
            .prefix("frame-")
            .tempfile_in(dir)
            .expect("frame file");
        std::fs::write(frame_file.path(), frame).expect("write frame");
        std::fs::set_permissions(frame_file.path(), std::fs::Permissions::from_mode(0o644))
            .expect("chmod frame");
        let (_, frame_path) = frame_file.keep().expect("keep frame file");
        let mut cmd = Command::new("python3");
        cmd.arg(requester_script())
            .arg(socket)
            .arg(target.to_string())
            .arg(fds)
            .arg(frame_path);
        if wait {
            cmd.arg("--wait");
        }
        let mut child = cmd
            .uid(uid)
            .gid(uid)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn requester");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut r = Requester {
            child,
            stdin,
            stdout,
        };
        if wait {
            let line = r.line();
            assert_eq!(
                line.trim(),
                "opened",
                "requester did not open its fds: {line}"
            );
        }
        r
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        let _ = self.stdout.read_line(&mut s);
        s
    }

    /// Lets a `wait` requester send.
    pub fn go(&mut self) {
        if let Some(mut i) = self.stdin.take() {
            let _ = i.write_all(b"go\n");
        }
    }

    /// Waits for its report.
    pub fn report(mut self) -> Report {
        self.go();
        let line = self.line();
        let _ = self.child.wait();
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("requester printed {line:?}: {e}"));
        if let Some(e) = v.get("open_error") {
            let errno = v.get("errno").and_then(|x| x.as_i64()).unwrap_or(0);
            return Report::OpenError(i32::try_from(errno).unwrap_or(0), e.to_string());
        }
        let hex_reply = v
            .get("reply_hex")
            .and_then(|x| x.as_str())
            .unwrap_or_default();
        Report::Reply(hex::decode(hex_reply).expect("hex reply"))
    }
}

impl Drop for Requester {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private directory the unprivileged requesters can enter.
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("memgate-adm-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A `SOCK_SEQPACKET` listener standing in for the broker's socket (pipeline tests).
pub struct Listener {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    sock: OwnedFd,
}

/// One request as the server receives it.
pub struct Received {
    pub conn: OwnedFd,
    pub frame: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Listener {
    pub fn new() -> Listener {
        let dir = tempdir();
        let path = dir.path().join("broker.sock");
        let sock =
            rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None).expect("socket");
        rustix::net::bind(&sock, &SocketAddrUnix::new(&path).expect("addr")).expect("bind");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        rustix::net::listen(&sock, 16).expect("listen");
        Listener { dir, path, sock }
    }

    /// Accepts the requester's connection and receives its one frame, or returns the
    /// requester's report if it gave up before connecting.
    pub fn receive(&self, req: &mut Requester) -> Result<Received, Report> {
        let deadline = Instant::now() + StdDuration::from_secs(20);
        loop {
            let mut p = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, bounded timeout.
            let n = unsafe { libc::poll(&mut p, 1, 100) };
            if n > 0 {
                break;
            }
            if let Ok(Some(_)) = req.child.try_wait() {
                let line = req.line();
                let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_default();
                let errno = v.get("errno").and_then(|x| x.as_i64()).unwrap_or(0);
                return Err(Report::OpenError(i32::try_from(errno).unwrap_or(0), line));
            }
            assert!(Instant::now() < deadline, "requester never connected");
        }
        let conn = rustix::net::accept(&self.sock).expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let got = recv_frame(conn.as_fd(), &mut buf, RecvFlags::empty()).expect("recv");
        buf.truncate(got.len);
        Ok(Received {
            conn,
            frame: buf,
            fds: got.fds,
        })
    }
}
