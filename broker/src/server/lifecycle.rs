//! Grant lifecycle: commit (from the fabric), and the end of a grant for every cause —
//! lease expiry, `Revoke`, target exit, a policy reload that no longer allows it,
//! requester disconnect, shutdown. Ending a grant revokes its keys (the next READ fails
//! with a remote access error), deregisters its regions, stops watching its pidfd,
//! audits the cause and answers every `Wait` on it.

use std::time::SystemTime;

use memgate_fabric::FabricEvent;
use memgate_policy::keys::fingerprint;
use memgate_proto::{GrantId, GrantState, WaitResult, WaitState};
use rustix::event::epoll;
use serde_json::json;

use super::handlers::ended_result;
use super::Server;
use crate::grants::EndCause;
use crate::policy_store::Reloaded;
use crate::systemd;

impl Server {
    /// Ends a live grant; `by` is the uid that revoked it explicitly.
    pub(super) fn end_grant(&mut self, id: &GrantId, cause: EndCause, by: Option<u32>) {
        let Some(rec) = self.registry.remove(id, cause) else {
            return;
        };
        let _ = epoll::delete(&self.ep, &rec.pidfd);
        self.unregister(*id, &rec.regions);
        let event = if cause == EndCause::Expired {
            "expire"
        } else {
            "revoke"
        };
        let mut fields = json!({
            "grant": id.to_string(), "cause": cause.as_str(), "uid": rec.uid,
            "target_pid": rec.target_pid, "bytes": rec.bytes,
            "committed": rec.state == GrantState::Committed,
            "keys_revoked": rec.regions.len(),
        });
        if let (Some(by), Some(obj)) = (by, fields.as_object_mut()) {
            obj.insert("by_uid".into(), json!(by));
        }
        self.audit.record(event, fields);
        tracing::info!("grant {id} ended: {}", cause.as_str());
        let result = ended_result(rec.state == GrantState::Committed, cause);
        self.wake_waiters(id, &result);
    }

    /// Handles one event reported by the fabric responder.
    pub(super) fn fabric_event(&mut self, ev: FabricEvent) {
        match ev {
            FabricEvent::Commit { grant, peer } => {
                let id = GrantId(grant);
                let Some(g) = self.registry.get_mut(&id) else {
                    tracing::debug!("commit for unknown grant {id}");
                    return;
                };
                // The responder only reports commits of connections authenticated for this
                // grant with its peer key; check anyway.
                if g.peer != peer {
                    return;
                }
                if g.state == GrantState::Committed {
                    return;
                }
                g.state = GrantState::Committed;
                self.audit.record(
                    "commit",
                    json!({"grant": id.to_string(), "peer": fingerprint(&peer)}),
                );
                self.wake_waiters(
                    &id,
                    &WaitResult {
                        state: WaitState::Committed,
                        cause: None,
                    },
                );
            }
            FabricEvent::Connected { grant, peer } => {
                self.audit.record(
                    "peer_connect",
                    json!({"grant": GrantId(grant).to_string(), "peer": fingerprint(&peer)}),
                );
            }
            FabricEvent::Disconnected { grant, peer } => {
                tracing::debug!(
                    "peer {} of grant {} disconnected",
                    fingerprint(&peer),
                    GrantId(grant)
                );
            }
            FabricEvent::AccessError {
                grant,
                rkey,
                reason,
            } => {
                self.audit.record(
                    "access_error",
                    json!({"grant": GrantId(grant).to_string(), "rkey": rkey, "reason": reason}),
                );
            }
            FabricEvent::AuthFailed {
                peer_addr,
                grant,
                peer,
                reason,
                suppressed,
            } => {
                // The claimed key only as its fingerprint; signatures never leave the
                // responder.
                self.audit.record(
                    "fabric_auth_failed",
                    json!({
                        "peer_addr": peer_addr,
                        "grant": grant.map(|g| GrantId(g).to_string()),
                        "peer": peer.map(|p| fingerprint(&p)),
                        "reason": reason,
                        "suppressed": suppressed,
                    }),
                );
            }
        }
    }

    /// Ends every grant whose lease is over.
    pub(super) fn expire_leases(&mut self, now: SystemTime) {
        for id in self.registry.expired(now) {
            self.end_grant(&id, EndCause::Expired, None);
        }
    }

    /// SIGHUP: reload the policy; on success re-check every live grant against it.
    pub(super) fn reload(&mut self) {
        systemd::notify(self.notifier.as_ref(), &systemd::reloading_message());
        let old_serial = self.store.policy().serial;
        match self.store.reload() {
            Ok(Reloaded::Unchanged) => {
                self.audit.record(
                    "policy_load",
                    json!({"serial": old_serial, "unchanged": true}),
                );
            }
            Ok(Reloaded::Replaced { old_serial }) => {
                let cur = self.store.current().clone();
                tracing::info!(
                    "policy serial {} loaded (was {old_serial})",
                    cur.policy.serial
                );
                self.audit.record(
                    "policy_load",
                    json!({"serial": cur.policy.serial, "previous_serial": old_serial,
                           "signer": cur.signer, "sha256": cur.digest}),
                );
                let now = SystemTime::now();
                let doomed: Vec<(GrantId, String)> = self
                    .registry
                    .iter()
                    .filter_map(|g| {
                        crate::recheck::violation(&cur.policy, &self.broker_id, g, now)
                            .map(|why| (g.grant.id, why))
                    })
                    .collect();
                for (id, why) in doomed {
                    tracing::info!("grant {id} no longer allowed: {why}");
                    self.audit.record(
                        "policy_recheck",
                        json!({"grant": id.to_string(), "serial": cur.policy.serial, "reason": why}),
                    );
                    self.end_grant(&id, EndCause::PolicyReload, None);
                }
                self.broker_id = cur.policy.broker.clone();
            }
            Err(e) => {
                tracing::error!("policy reload refused, keeping serial {old_serial}: {e}");
                self.audit.record(
                    "policy_reject",
                    json!({"code": e.code(), "message": e.to_string(), "kept_serial": old_serial}),
                );
            }
        }
        systemd::notify(
            self.notifier.as_ref(),
            &format!(
                "READY=1\nSTATUS=serving; policy serial {}",
                self.store.policy().serial
            ),
        );
    }

    /// SIGTERM: revoke everything, answer waits, close connections, stop the fabric.
    pub(super) fn shutdown(&mut self) {
        systemd::notify(self.notifier.as_ref(), "STOPPING=1");
        let ids = self.registry.ids();
        let revoked = ids.len();
        for id in ids {
            self.end_grant(&id, EndCause::Shutdown, None);
        }
        let conns: Vec<u64> = self.conns.keys().copied().collect();
        let closed = conns.len();
        for id in conns {
            if let Some(c) = self.conns.remove(&id) {
                let _ = epoll::delete(&self.ep, &c.fd);
            }
        }
        self.responder.shutdown();
        if let Some(p) = &self.socket_path {
            // unlinkat, not unlink: the seccomp allow-list has only the *at form.
            if let Err(e) = rustix::fs::unlinkat(rustix::fs::CWD, p, rustix::fs::AtFlags::empty()) {
                tracing::warn!("removing {}: {e}", p.display());
            }
        }
        self.audit.record(
            "shutdown",
            json!({"revoked": revoked, "connections_closed": closed,
                   "admitted": self.admitted, "denied": self.denied}),
        );
        tracing::info!("stopped: {revoked} grants revoked, {closed} connections closed");
    }
}
