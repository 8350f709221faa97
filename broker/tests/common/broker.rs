//! Starts the real `memgated` binary for the binary-level adversarial tests: a temporary
//! directory with a configuration, the admin key, the signed policy and the audit log;
//! waits for `READY=1` on a private `NOTIFY_SOCKET`; kills the broker on drop.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memgate_proto::{BrokerClient, Request, Response, StatusInfo};
use serde_json::Value;

use super::{daemon, policy_text, Keys, PolicySpec};

/// A running (or failed) memgated.
pub struct Broker {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub policy_path: PathBuf,
    pub sig_path: PathBuf,
    pub audit_path: PathBuf,
    notify: UnixDatagram,
    stderr: Arc<Mutex<String>>,
    pub child: Child,
}

impl Broker {
    /// Writes the files (policy signed by the admin key unless `sig` is given) and spawns
    /// memgated, without waiting.
    pub fn spawn(keys: &Keys, policy: &str, sig: Option<&str>) -> Broker {
        let dir = super::tempdir();
        let p = dir.path();
        std::fs::write(p.join("admin.pub"), keys.admin.public().to_file_text()).unwrap();
        let policy_path = p.join("policy.toml");
        let sig_path = p.join("policy.toml.minisig");
        std::fs::write(&policy_path, policy).unwrap();
        let signed = keys.sign(policy);
        std::fs::write(&sig_path, sig.unwrap_or(&signed)).unwrap();
        let config = "socket = \"broker.sock\"\nlog_level = \"debug\"\nlog_target = \"stderr\"\n\
             state_dir = \"state\"\n\
             [policy]\npath = \"policy.toml\"\nadmin_keys = [\"admin.pub\"]\n\
             [fabric]\nlisten = \"tcp:127.0.0.1:0\"\n\
             [audit]\npath = \"audit.jsonl\"\njournal = false\n";
        let config_path = p.join("memgated.toml");
        std::fs::write(&config_path, config).unwrap();
        let notify_path = p.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_memgated"))
            .arg("--config")
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn memgated");
        let stderr = daemon::collect_stderr(&mut child);
        Broker {
            socket: p.join("broker.sock"),
            policy_path,
            sig_path,
            audit_path: p.join("audit.jsonl"),
            dir,
            notify,
            stderr,
            child,
        }
    }

    /// Starts memgated with the policy of `spec` and waits until it is ready.
    pub fn start(keys: &Keys, spec: &PolicySpec) -> Broker {
        let b = Broker::spawn(keys, &policy_text(keys, spec), None);
        b.wait_notify("READY=1", Duration::from_secs(20))
            .unwrap_or_else(|| panic!("memgated not ready: {}", b.stderr()));
        std::fs::set_permissions(&b.socket, std::fs::Permissions::from_mode(0o777)).unwrap();
        b
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        daemon::collected(&self.stderr)
    }

    /// Waits for a notification starting with `prefix`.
    pub fn wait_notify(&self, prefix: &str, timeout: Duration) -> Option<String> {
        daemon::wait_notify(&self.notify, prefix, timeout)
    }

    /// Waits for the broker to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let st = daemon::wait_exit(&mut self.child, timeout)?;
        daemon::settle(&self.stderr, Duration::from_secs(5));
        Some(st)
    }

    /// A root client.
    pub fn client(&self) -> BrokerClient {
        let c = BrokerClient::connect(&self.socket).expect("connect");
        c.set_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    }

    /// Broker status (as root).
    pub fn status(&self) -> StatusInfo {
        match self.client().call(&Request::Status, &[]).expect("status") {
            Response::Status(s) => s,
            other => panic!("status: {other:?}"),
        }
    }

    /// Asserts that no grant and no fabric key exists.
    #[track_caller]
    pub fn assert_nothing_registered(&self) {
        let s = self.status();
        assert_eq!(s.active_grants, 0, "{s:?}");
        assert_eq!(s.active_bytes, 0, "{s:?}");
        assert_eq!(s.registered_keys, 0, "{s:?}");
    }

    /// Audit records so far.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Replaces the policy files and sends SIGHUP; waits for the reload to end.
    pub fn reload(&self, policy: &str, sig: &str) {
        std::fs::write(&self.policy_path, policy).unwrap();
        std::fs::write(&self.sig_path, sig).unwrap();
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory effects; the pid is our own child.
        unsafe { libc::kill(pid, libc::SIGHUP) };
        assert!(
            self.wait_notify("READY=1", Duration::from_secs(10))
                .is_some(),
            "no READY after reload: {}",
            self.stderr()
        );
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
