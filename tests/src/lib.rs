//! Helpers shared by the integration tests: locating the built binaries, children that are
//! killed when a test ends (even by panic), private temporary directories, and a [`Lab`]: a
//! real `memgated` started with freshly generated keys and a signed policy.
//!
//! Binaries are found in the cargo target directory: an integration test runs from
//! `<target>/<profile>/deps/`, so `memgate` and `memgated` are in the parent of the test
//! executable's directory (built by `cargo build`/`cargo nextest run --workspace`).

use memgate_policy::{keys::SecretKey, minisign, token};
use memgate_proto::{BrokerClient, Request, Response, StatusInfo};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary (`memgate`, `memgated`) next to the test's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("profile dir")
    } else {
        deps
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built (run cargo build --workspace first)",
        p.display()
    );
    p
}

/// A child process killed and reaped on drop.
pub struct Proc(Option<Child>);

impl Proc {
    /// Takes ownership of a spawned child.
    pub fn new(child: Child) -> Proc {
        Proc(Some(child))
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        if let Some(c) = &self.0 {
            // SAFETY: kill(2) on our own (not yet reaped) child's pid; no memory involved.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits for it to exit and collects its piped output.
    pub fn output(mut self) -> Output {
        self.0
            .take()
            .expect("child")
            .wait_with_output()
            .expect("wait for child")
    }
}

pub use libc::{SIGBUS, SIGKILL, SIGSTOP};

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A temporary directory removed on drop.
pub struct Tmp(pub PathBuf);

impl Tmp {
    /// Creates a unique directory under the system temp dir.
    pub fn new(tag: &str) -> Tmp {
        let n = SystemNanos::now();
        let p = std::env::temp_dir().join(format!("memgate-t-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Tmp(p)
    }
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct SystemNanos;
impl SystemNanos {
    fn now() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    }
}

/// The cgroup v2 path of a process.
pub fn cgroup_of(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup v2 line")
        .trim()
        .to_string()
}

const BROKER_ID: &str = "memgate-test";

/// A running memgated with its keys.
pub struct Lab {
    /// Temp directory holding keys, policy, config, sockets.
    pub dir: Tmp,
    /// The broker's API socket.
    pub socket: PathBuf,
    /// The broker process.
    pub broker: Proc,
    issuer: SecretKey,
    /// The fault server's peer key.
    pub peer: SecretKey,
    /// Path of the peer key file (PASERK secret).
    pub peer_file: PathBuf,
    cgroup: String,
}

fn q(s: &Path) -> String {
    serde_json::to_string(&s.to_string_lossy()).expect("string")
}

impl Lab {
    /// Starts memgated (hardened, as in production) with a policy letting this uid export
    /// from this process's cgroup.
    pub fn start(tag: &str) -> Lab {
        let dir = Tmp::new(tag);
        let d = dir.path();
        let admin = minisign::SecretKey::generate().expect("admin");
        let issuer = SecretKey::generate().expect("issuer");
        let peer = SecretKey::generate().expect("peer");
        let cgroup = cgroup_of(std::process::id());
        let uid = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
            .expect("uid");
        let policy = format!(
            "version = 1\nbroker = \"{BROKER_ID}\"\nserial = 1\n\n[[issuer]]\nname = \"t\"\nkey = \"{}\"\n\
             cgroups = [{}]\nuids = [{uid}]\nmax_bytes = \"8G\"\nmax_lease = 600\n",
            issuer.public().to_paserk(),
            serde_json::to_string(&cgroup).expect("cg")
        );
        std::fs::write(d.join("policy.toml"), &policy).expect("policy");
        let sig = admin.sign(policy.as_bytes(), "test policy").expect("sign");
        std::fs::write(d.join("policy.toml.minisig"), sig.to_file_text()).expect("sig");
        std::fs::write(d.join("admin.pub"), admin.public().to_file_text()).expect("admin pub");
        let socket = d.join("broker.sock");
        let config = format!(
            "socket = {}\nlog_level = \"warn\"\nlog_target = \"stderr\"\nstate_dir = \"state\"\n[policy]\npath = {}\nsignature = {}\n\
             admin_keys = [{}]\n[fabric]\nlisten = \"tcp:127.0.0.1:0\"\n[audit]\npath = {}\njournal = false\n",
            q(&socket),
            q(&d.join("policy.toml")),
            q(&d.join("policy.toml.minisig")),
            q(&d.join("admin.pub")),
            q(&d.join("audit.jsonl")),
        );
        std::fs::write(d.join("memgated.toml"), config).expect("config");
        let peer_file = d.join("peer.key");
        std::fs::write(&peer_file, peer.to_paserk()).expect("peer key");
        let broker = Proc::new(
            Command::new(bin("memgated"))
                .arg("--config")
                .arg(d.join("memgated.toml"))
                .stdin(Stdio::null())
                .spawn()
                .expect("memgated"),
        );
        let lab = Lab {
            dir,
            socket,
            broker,
            issuer,
            peer,
            peer_file,
            cgroup,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while lab.status().is_none() {
            assert!(Instant::now() < deadline, "memgated did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        lab
    }

    /// Runs `memgate ARGS --socket <this broker's socket>` to completion (stdin closed,
    /// output collected).
    pub fn memgate(&self, args: &[&str]) -> Output {
        Command::new(bin("memgate"))
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .output()
            .expect("run memgate")
    }

    /// Broker status, if it answers.
    pub fn status(&self) -> Option<StatusInfo> {
        let mut c = BrokerClient::connect(&self.socket).ok()?;
        match c.call(&Request::Status, &[]).ok()? {
            Response::Status(s) => Some(s),
            _ => None,
        }
    }

    /// Mints a single-use export token for `pid`; returns the path of a file holding it.
    pub fn token_file(&self, pid: u32) -> PathBuf {
        self.token_file_with_lease(pid, 600)
    }

    /// Like [`Lab::token_file`] with a `lease` claim of `lease` seconds.
    pub fn token_file_with_lease(&self, pid: u32, lease: u64) -> PathBuf {
        let now = time::OffsetDateTime::now_utc();
        let claims = token::Claims {
            iss: "t".into(),
            sub: std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .expect("uid")
                .to_string(),
            aud: BROKER_ID.into(),
            exp: now + time::Duration::minutes(5),
            nbf: now - time::Duration::seconds(5),
            iat: now,
            jti: token::new_jti(),
            target: token::Target {
                cgroup: self.cgroup.clone(),
                pid: Some(pid),
            },
            access: memgate_policy::Access::Read,
            max_bytes: 8 << 30,
            lease,
            peer: self.peer.public(),
        };
        let t = token::mint(&self.issuer, &claims, None).expect("mint");
        let p = self.dir.path().join(format!("token-{pid}"));
        std::fs::write(&p, t).expect("token file");
        p
    }
}

/// Starts the demo target (`memgate __demo-target`) holding `size` bytes filled from
/// `seed`; returns it and the JSON line in which it describes itself (pid, regions).
pub fn demo_target(size: u64, seed: u64) -> (Proc, String) {
    let mut child = Command::new(bin("memgate"))
        .args(["__demo-target", "--size", &size.to_string()])
        .args(["--seed", &seed.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("demo target");
    let out = child.stdout.take().expect("stdout");
    let target = Proc::new(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
        .expect("the target describes itself");
    (target, line)
}

/// Waits until `cond` holds or `secs` pass; returns whether it held.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    cond()
}
