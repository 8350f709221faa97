//! The list of conformance cases, in the order they run, and the few that need no
//! module of their own.

use super::util::*;
use super::{access, data};
use super::{Case, ProbeTarget, Provider};

/// Every case, in the order they run.
pub(super) static ALL: &[Case] = &[
    Case {
        name: "wrong_rkey",
        run: access::wrong_rkey,
    },
    Case {
        name: "out_of_range",
        run: access::out_of_range,
    },
    Case {
        name: "wrong_access",
        run: access::wrong_access,
    },
    Case {
        name: "expired",
        run: access::expired,
    },
    Case {
        name: "revoked_mid_stream",
        run: access::revoked_mid_stream,
    },
    Case {
        name: "wrong_peer_key",
        run: access::wrong_peer_key,
    },
    Case {
        name: "unauthenticated_connection",
        run: unauthenticated_connection,
    },
    Case {
        name: "error_state_then_flushed",
        run: access::error_state_then_flushed,
    },
    Case {
        name: "target_exit_during_reads",
        run: data::target_exit_during_reads,
    },
    Case {
        name: "large_reads",
        run: data::large_reads,
    },
    Case {
        name: "many_concurrent_reads",
        run: data::many_concurrent_reads,
    },
    Case {
        name: "byte_exact_data",
        run: data::byte_exact_data,
    },
    Case {
        name: "commit_delivered_as_event",
        run: data::commit_delivered_as_event,
    },
];

/// Nothing is served on a connection that has not proven possession of the peer key
/// (the provider's probe tries each way in); a genuine key set-up is in place so that a
/// served request would be noticed.
fn unauthenticated_connection(p: &dyn Provider) -> R {
    let env = Env::new(p)?;
    let mem = Mem::new(8192, 16)?;
    let (a, g) = (peer(16), grant(16));
    let region = env.register(p, &mem)?;
    let k = env.key(&region, KeyArgs::read(mem.addr(), 8192, a.public, g))?;
    let endpoint = env.resp.endpoint();
    p.unauthenticated_probe(&ProbeTarget {
        endpoint: &endpoint,
        grant: g,
        seed: a.seed,
        rkey: k,
        addr: mem.addr(),
        len: 4096,
    })
}
