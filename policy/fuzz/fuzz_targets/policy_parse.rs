//! Fuzzes the policy document parser (TOML, then every value check) and, for documents
//! that parse, the cgroup matcher and the JSON summary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate_policy::Policy;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Policy::parse_bytes(data) {
        let _ = p.to_json();
        for i in &p.issuers {
            let _ = i.allows_cgroup("/a/b/c");
            let _ = i.allows_cgroup(&p.broker);
        }
    }
});
