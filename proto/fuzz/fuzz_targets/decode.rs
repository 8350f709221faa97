//! Fuzz target: request and response decoding must never panic, and anything that
//! decodes must re-encode to a frame that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate_proto::{Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::decode(data) {
        let again = req.encode().expect("decoded request re-encodes");
        assert_eq!(Request::decode(&again).expect("re-decodes"), req);
    }
    if let Ok(resp) = Response::decode(data) {
        let again = resp.encode().expect("decoded response re-encodes");
        assert_eq!(Response::decode(&again).expect("re-decodes"), resp);
    }
});
