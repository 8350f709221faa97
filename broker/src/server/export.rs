//! `Export`: the admission pipeline (`crate::admission`), then registration through the
//! fabric (step 7): one registered region and one restricted key per admitted region,
//! bound to the token's peer key and the grant id, expiring with the lease. Any failure
//! part-way undoes what was registered, so a failed export leaves nothing behind.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::SystemTime;

use memgate_fabric::{FabricError, KeySpec, MemorySource, ProcMemSource, Target};
use memgate_policy::keys::{fingerprint, PublicKey as PeerKey};
use memgate_proto::{ExportRequest, Grant, GrantId, GrantRegion, GrantState, Response};
use rustix::event::epoll;
use serde_json::json;
use time::OffsetDateTime;

use super::{data, Server, TAG_PIDFD};
use crate::admission::{self, Admitted, Denial, Input};
use crate::grants::{GrantRecord, LiveRegion};

/// A fresh random grant id (128 bits from the OS generator).
pub fn new_grant_id() -> Result<GrantId, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b)?;
    Ok(GrantId(b))
}

fn fabric_access(a: memgate_policy::Access) -> memgate_fabric::Access {
    match a {
        memgate_policy::Access::Read => memgate_fabric::Access::REMOTE_READ,
        memgate_policy::Access::ReadWrite => memgate_fabric::Access::READ_WRITE,
    }
}

fn proto_access(a: memgate_policy::Access) -> memgate_proto::Access {
    match a {
        memgate_policy::Access::Read => memgate_proto::Access::Read,
        memgate_policy::Access::ReadWrite => memgate_proto::Access::ReadWrite,
    }
}

impl Server {
    fn deny(&mut self, uid: u32, gid: u32, pid: i32, d: &Denial) -> Response {
        self.denied += 1;
        let reasons: Vec<_> = d
            .reasons
            .iter()
            .map(|r| json!({"code": r.code, "message": r.message}))
            .collect();
        self.audit.record(
            "export_deny",
            json!({"uid": uid, "gid": gid, "pid": pid, "code": d.code, "reasons": reasons}),
        );
        Response::Denied(d.to_proto())
    }

    pub(super) fn export(&mut self, id: u64, req: &ExportRequest, fds: Vec<OwnedFd>) -> Response {
        let Some((uid, gid, pid)) = self.conns.get(&id).map(|c| (c.uid, c.gid, c.pid)) else {
            return Response::error("internal", "connection vanished");
        };
        if self.registry.len() >= self.limits.max_grants {
            let d = Denial::new(
                "broker_grants_exhausted",
                format!(
                    "the broker holds its maximum of {} grants",
                    self.limits.max_grants
                ),
            );
            return self.deny(uid, gid, pid, &d);
        }
        let usage = self.registry.usage(uid);
        let policy = self.store.policy().clone();
        let outcome = {
            let Some(conn) = self.conns.get(&id) else {
                return Response::error("internal", "connection vanished");
            };
            let input = Input {
                socket: conn.fd.as_fd(),
                request: req,
                fds,
                usage,
            };
            admission::admit(
                input,
                &policy,
                &mut self.admission,
                OffsetDateTime::now_utc(),
            )
        };
        let adm = match outcome {
            Ok(a) => a,
            Err(d) => return self.deny(uid, gid, pid, &d),
        };
        if self.registry.total_bytes().saturating_add(adm.bytes) > self.limits.max_total_bytes {
            let d = Denial::new(
                "broker_bytes_exhausted",
                format!(
                    "{} more bytes would exceed the broker's limit of {}",
                    adm.bytes, self.limits.max_total_bytes
                ),
            );
            return self.deny(adm.uid, adm.gid, adm.requester_pid, &d);
        }
        self.grant(id, adm)
    }

    /// Registers an admitted export and records the grant; the reply is the grant or
    /// the error that undid it.
    fn grant(&mut self, conn: u64, adm: Admitted) -> Response {
        let Ok(grant_id) = new_grant_id() else {
            tracing::error!("the system random generator failed");
            return Response::error("internal", "no randomness for a grant id");
        };
        let expires = SystemTime::from(adm.expires);
        let Admitted {
            uid,
            gid,
            requester_pid,
            target,
            regions,
            access,
            lease_secs,
            bytes,
            peer,
            jti,
            issuer,
            issuer_fingerprint,
            revoke_on_disconnect,
            ..
        } = adm;
        let source: Arc<dyn MemorySource> = match access {
            memgate_policy::Access::Read => Arc::new(ProcMemSource::new(target.mem)),
            memgate_policy::Access::ReadWrite => Arc::new(ProcMemSource::new_writable(target.mem)),
        };
        let tgt = Target {
            pidfd: target.pidfd.as_fd(),
            source,
        };
        let live = match self.register(&tgt, &regions, access, peer, grant_id, expires) {
            Ok(l) => l,
            Err(e) => {
                self.audit.record(
                    "registration_failed",
                    json!({"grant": grant_id.to_string(), "uid": uid, "target_pid": target.pid,
                           "message": e.to_string()}),
                );
                return Response::error("registration_failed", e.to_string());
            }
        };
        let slot = self.registry.allocate_slot();
        if let Err(e) = epoll::add(
            &self.ep,
            &target.pidfd,
            data(TAG_PIDFD, slot),
            epoll::EventFlags::IN,
        ) {
            self.unregister(grant_id, &live);
            return Response::error("internal", format!("watching the target: {e}"));
        }
        let grant = Grant {
            id: grant_id,
            endpoint: self.endpoint.clone(),
            peer: PeerKey::from_bytes(peer).to_paserk(),
            access: proto_access(access),
            expires_unix: expires
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            regions: live
                .iter()
                .map(|l| GrantRegion {
                    addr: l.region.addr,
                    len: l.region.len,
                    rkey: l.rkey,
                })
                .collect(),
        };
        self.admitted += 1;
        self.audit.record(
            "export_allow",
            json!({
                "grant": grant_id.to_string(),
                "uid": uid, "gid": gid, "pid": requester_pid,
                "target_pid": target.pid, "cgroup": target.cgroup,
                "regions": live.iter().map(|l| json!({
                    "addr": l.region.addr, "len": l.region.len,
                    "kind": l.region.kind.as_str(), "rkey": l.rkey,
                })).collect::<Vec<_>>(),
                "bytes": bytes, "access": access.as_str(), "lease_secs": lease_secs,
                "expires_unix": grant.expires_unix,
                "peer": fingerprint(&peer), "issuer": issuer, "issuer_key": issuer_fingerprint,
                "jti": jti, "policy_serial": self.store.policy().serial,
                "revoke_on_disconnect": revoke_on_disconnect,
            }),
        );
        self.registry.insert(GrantRecord {
            grant: grant.clone(),
            slot,
            uid,
            gid,
            requester_pid,
            target_pid: target.pid,
            pidfd: target.pidfd,
            cgroup: target.cgroup,
            regions: live,
            access,
            bytes,
            lease_secs,
            expires,
            peer,
            issuer,
            issuer_fingerprint,
            state: GrantState::Active,
            owner_conn: revoke_on_disconnect.then_some(conn),
        });
        Response::Grant(grant)
    }

    fn register(
        &self,
        target: &Target<'_>,
        regions: &[memgate_policy::Region],
        access: memgate_policy::Access,
        peer: [u8; 32],
        grant: GrantId,
        expires: SystemTime,
    ) -> Result<Vec<LiveRegion>, FabricError> {
        let mut live: Vec<LiveRegion> = Vec::with_capacity(regions.len());
        for r in regions {
            let step = self
                .responder
                .register_target(target, r.addr, r.len)
                .and_then(|fr| {
                    let spec = KeySpec {
                        addr: r.addr,
                        len: r.len,
                        access: fabric_access(access),
                        peer,
                        grant: grant.0,
                        expires,
                    };
                    match self.responder.create_key(&fr, spec) {
                        Ok(rkey) => Ok(LiveRegion {
                            region: *r,
                            rkey,
                            fabric: fr,
                        }),
                        Err(e) => {
                            let _ = self.responder.deregister(fr);
                            Err(e)
                        }
                    }
                });
            match step {
                Ok(l) => live.push(l),
                Err(e) => {
                    self.unregister(grant, &live);
                    return Err(e);
                }
            }
        }
        Ok(live)
    }

    /// Revokes every key of `grant` and deregisters its regions.
    pub(super) fn unregister(&self, grant: GrantId, live: &[LiveRegion]) {
        self.responder.revoke_grant(grant.0);
        for l in live {
            let _ = self.responder.deregister(l.fabric.clone());
        }
    }
}
