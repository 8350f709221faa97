//! `Revoke`, `List`, `Status` and `Wait`. A grant is visible to the uid that created it
//! and to root only.

use std::time::{Duration, Instant};

use memgate_proto::{
    Denied, GrantId, GrantState, Reason, Response, StatusInfo, WaitRequest, WaitResult, WaitState,
};
use serde_json::json;

use super::Server;
use crate::grants::EndCause;

fn not_owner(grant: &GrantId, uid: u32) -> Response {
    let message = format!("grant {grant} was not created by uid {uid}");
    Response::Denied(Denied {
        code: "not_owner".into(),
        reasons: vec![Reason {
            code: "not_owner".into(),
            message,
        }],
    })
}

fn unknown(grant: &GrantId) -> Response {
    Response::error("unknown_grant", format!("no grant {grant}"))
}

impl Server {
    fn caller(&self, id: u64) -> Option<(u32, i32)> {
        self.conns.get(&id).map(|c| (c.uid, c.pid))
    }

    pub(super) fn revoke(&mut self, id: u64, grant: GrantId) -> Response {
        let Some((uid, pid)) = self.caller(id) else {
            return Response::error("internal", "connection vanished");
        };
        let owner = match (self.registry.get(&grant), self.registry.tombstone(&grant)) {
            (Some(g), _) => g.uid,
            (None, Some(t)) if t.uid == uid || uid == 0 => {
                return Response::WaitResult(WaitResult {
                    state: t.cause.wait_state(),
                    cause: Some(t.cause.as_str().to_string()),
                })
            }
            _ => return unknown(&grant),
        };
        if owner != uid && uid != 0 {
            self.audit.record(
                "revoke_deny",
                json!({"grant": grant.to_string(), "uid": uid, "pid": pid, "owner": owner,
                       "code": "not_owner"}),
            );
            return not_owner(&grant, uid);
        }
        self.end_grant(&grant, EndCause::Explicit, Some(uid));
        Response::WaitResult(WaitResult {
            state: WaitState::Revoked,
            cause: Some(EndCause::Explicit.as_str().to_string()),
        })
    }

    pub(super) fn list(&self, id: u64) -> Response {
        match self.caller(id) {
            Some((uid, _)) => Response::Grants(self.registry.list(uid)),
            None => Response::error("internal", "connection vanished"),
        }
    }

    pub(super) fn status(&self, id: u64) -> Response {
        let uid = self.caller(id).map_or(u32::MAX, |c| c.0);
        Response::Status(StatusInfo {
            broker_id: self.broker_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            policy_serial: self.store.policy().serial,
            endpoint: self.endpoint.clone(),
            active_grants: self.registry.len() as u64,
            active_bytes: self.registry.total_bytes(),
            caller_grants: u64::from(self.registry.usage(uid).grants),
            registered_keys: self.registry.key_count(),
            admitted: self.admitted,
            denied: self.denied,
            uptime_secs: self.started.elapsed().as_secs(),
        })
    }

    /// Answers at once when the outcome is known; otherwise parks the connection until
    /// the grant is committed or ends, or the timeout passes (None: reply deferred).
    pub(super) fn wait(&mut self, id: u64, w: WaitRequest) -> Option<Response> {
        let (uid, _) = self.caller(id)?;
        if let Some(g) = self.registry.get(&w.grant) {
            if g.uid != uid && uid != 0 {
                return Some(not_owner(&w.grant, uid));
            }
            if g.state == GrantState::Committed {
                return Some(Response::WaitResult(WaitResult {
                    state: WaitState::Committed,
                    cause: None,
                }));
            }
        } else if let Some(t) = self.registry.tombstone(&w.grant) {
            if t.uid != uid && uid != 0 {
                return Some(not_owner(&w.grant, uid));
            }
            return Some(Response::WaitResult(ended_result(t.committed, t.cause)));
        } else {
            return Some(unknown(&w.grant));
        }
        if w.timeout_ms == 0 {
            return Some(Response::WaitResult(WaitResult {
                state: WaitState::Timeout,
                cause: None,
            }));
        }
        let ms = w.timeout_ms.min(self.limits.max_wait_ms);
        let deadline = Instant::now() + Duration::from_millis(ms);
        let conn = self.conns.get_mut(&id)?;
        conn.wait = Some((w.grant, deadline));
        self.waiters.entry(w.grant).or_default().push(id);
        if let Some(conn) = self.conns.get(&id) {
            self.watch_conn(id, &conn.fd, false);
        }
        None
    }

    /// Answers every parked `Wait` on `grant` with `result`.
    pub(super) fn wake_waiters(&mut self, grant: &GrantId, result: &WaitResult) {
        let Some(ids) = self.waiters.remove(grant) else {
            return;
        };
        for id in ids {
            self.finish_wait(id, result);
        }
    }

    /// Ends the parked `Wait` of connection `id` with `result` and resumes reading.
    pub(super) fn finish_wait(&mut self, id: u64, result: &WaitResult) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.wait = None;
        if let Some(conn) = self.conns.get(&id) {
            self.watch_conn(id, &conn.fd, true);
        }
        self.reply(id, &Response::WaitResult(result.clone()));
    }

    /// Answers `Wait`s whose timeout passed.
    pub(super) fn expire_waits(&mut self, now: Instant) {
        let due: Vec<(u64, GrantId)> = self
            .conns
            .iter()
            .filter_map(|(id, c)| c.wait.filter(|(_, d)| *d <= now).map(|(g, _)| (*id, g)))
            .collect();
        for (id, grant) in due {
            if let Some(w) = self.waiters.get_mut(&grant) {
                w.retain(|c| *c != id);
                if w.is_empty() {
                    self.waiters.remove(&grant);
                }
            }
            self.finish_wait(
                id,
                &WaitResult {
                    state: WaitState::Timeout,
                    cause: None,
                },
            );
        }
    }
}

/// The `Wait` answer for a grant that ended: committed grants report the commit (the
/// migration succeeded even if the grant later ended), others how they ended.
pub(super) fn ended_result(committed: bool, cause: EndCause) -> WaitResult {
    if committed {
        WaitResult {
            state: WaitState::Committed,
            cause: None,
        }
    } else {
        WaitResult {
            state: cause.wait_state(),
            cause: Some(cause.as_str().to_string()),
        }
    }
}
