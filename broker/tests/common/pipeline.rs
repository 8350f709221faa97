//! The pipeline-level test world: keys, a policy, a listener standing in for the broker's
//! socket, a target running as another uid, and the admission state; requests are served
//! by calling `admit()` directly.

use std::os::fd::AsFd;

use memgate_policy::{Policy, Usage};
use memgate_proto::{RegionSelection, Request, Response};
use memgated::admission::{admit, AdmissionConfig, AdmissionState, Admitted, Denial, Input};
use time::OffsetDateTime;

use super::*;

/// One test world: keys, a policy, a listener, a target, the pipeline state.
pub struct World {
    pub keys: Keys,
    pub policy: Policy,
    pub listener: Listener,
    pub target: Target,
    pub state: AdmissionState,
    pub usage: Usage,
}

impl World {
    pub fn new() -> World {
        Self::with(PolicySpec::default())
    }

    pub fn with(spec: PolicySpec) -> World {
        let keys = Keys::generate();
        let policy = policy(&keys, &spec);
        World {
            keys,
            policy,
            listener: Listener::new(),
            target: Target::spawn(TARGET_UID),
            state: AdmissionState::new(AdmissionConfig::default()),
            usage: Usage::default(),
        }
    }

    /// Default claims for `uid` on the target.
    pub fn claims(&self, uid: u32) -> memgate_policy::Claims {
        claims(&self.keys, uid, &self.target.cgroup())
    }

    pub fn token(&self, uid: u32) -> String {
        mint(&self.keys, &self.claims(uid))
    }

    /// The lowest page of the target's stack.
    pub fn stack_page(&self) -> RegionSelection {
        self.target.stack_page()
    }

    /// A read request for the stack page, with a fresh default token for `uid`.
    pub fn stack_req(&self, uid: u32) -> Request {
        read_req(self.token(uid), self.stack_page())
    }

    /// A requester as `uid` that has opened `FDS` about `pid` and waits for
    /// [`Requester::go`] before sending `req`.
    pub fn waiting(&self, uid: u32, pid: i32, req: &Request) -> Requester {
        Requester::start(
            uid,
            &self.listener.path,
            pid,
            FDS,
            &req.encode().expect("encode"),
            true,
        )
    }

    /// Runs one request from a requester with `uid` sending `fds` about `pid`.
    pub fn run_raw(
        &mut self,
        uid: u32,
        pid: i32,
        fds: &str,
        frame: &[u8],
    ) -> Result<Admitted, Denial> {
        let mut r = Requester::start(uid, &self.listener.path, pid, fds, frame, false);
        self.serve(&mut r)
    }

    pub fn serve(&mut self, r: &mut Requester) -> Result<Admitted, Denial> {
        let got = match self.listener.receive(r) {
            Ok(g) => g,
            Err(report) => panic!("requester did not send: {report:?}"),
        };
        let outcome = match Request::decode(&got.frame) {
            Err(e) => Err(Denial::new(e.code(), e.to_string())),
            Ok(Request::Export(req)) => admit(
                Input {
                    socket: got.conn.as_fd(),
                    request: &req,
                    fds: got.fds,
                    usage: self.usage,
                },
                &self.policy,
                &mut self.state,
                OffsetDateTime::now_utc(),
            ),
            Ok(other) => panic!("not an export: {other:?}"),
        };
        let reply = match &outcome {
            Ok(_) => Response::error("test", "admitted"),
            Err(d) => Response::Denied(d.to_proto()),
        };
        let _ = memgate_proto::transport::send_frame(
            got.conn.as_fd(),
            &reply.encode().expect("encode"),
            &[],
        );
        outcome
    }

    pub fn run(&mut self, uid: u32, fds: &str, req: &Request) -> Result<Admitted, Denial> {
        let pid = self.target.pid;
        self.run_raw(uid, pid, fds, &req.encode().expect("encode"))
    }

    /// Expects a denial with `code`, and that nothing was admitted or consumed.
    #[track_caller]
    pub fn denied(&mut self, uid: u32, fds: &str, req: &Request, code: &str) -> Denial {
        let pid = self.target.pid;
        let frame = req.encode().expect("encode");
        let mut r = Requester::start(uid, &self.listener.path, pid, fds, &frame, false);
        self.serve_denied(&mut r, code)
    }

    /// The target's uid sends `FDS` and a read request of the stack page carrying `token`;
    /// expects a denial with `code` (see [`World::denied`]).
    #[track_caller]
    pub fn denied_token(&mut self, token: String, code: &str) -> Denial {
        let req = read_req(token, self.stack_page());
        self.denied(TARGET_UID, FDS, &req, code)
    }

    /// The target's uid sends `fds` with a read request of the stack page (fresh default
    /// token); expects a denial with `code` (see [`World::denied`]).
    #[track_caller]
    pub fn denied_fds(&mut self, fds: &str, code: &str) -> Denial {
        let req = self.stack_req(TARGET_UID);
        self.denied(TARGET_UID, fds, &req, code)
    }

    /// The target's uid asks to read `regions` with a fresh default token and `FDS`;
    /// expects a denial with `code` (see [`World::denied`]).
    #[track_caller]
    pub fn denied_regions(&mut self, regions: &[(u64, u64)], code: &str) -> Denial {
        let req = read_req(self.token(TARGET_UID), list(regions));
        self.denied(TARGET_UID, FDS, &req, code)
    }

    /// Serves `r`; expects a denial with `code`, and that nothing was admitted or consumed.
    #[track_caller]
    pub fn serve_denied(&mut self, r: &mut Requester, code: &str) -> Denial {
        let before = self.state.replay.len();
        let d = match self.serve(r) {
            Ok(a) => panic!("admitted, expected {code}: {a:?}"),
            Err(d) => d,
        };
        assert_eq!(d.code, code, "{d}");
        assert_eq!(
            self.state.replay.len(),
            before,
            "a denied request consumed a token id"
        );
        d
    }
}
