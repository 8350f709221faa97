//! Fuzz the soft provider's frame decoder with both bounds it is used with (requests at
//! the responder, replies at the initiator): any input either decodes into frames that
//! stay inside the input, asks for more bytes, or is refused — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use memgate_fabric::soft::wire;

fuzz_target!(|data: &[u8]| {
    for max in [wire::MAX_REQUEST_BODY, wire::MAX_REPLY_BODY] {
        let mut at = 0;
        while let Ok(Some((frame, n))) = wire::decode(&data[at..], max) {
            assert!(n >= wire::HDR && at + n <= data.len());
            if let wire::Frame::ReadSg { wr_id, segs } = frame {
                assert!(wire::segments(wr_id, segs).count() <= memgate_fabric::MAX_SGE);
            }
            at += n;
        }
    }
    if let Some(h) = data.first_chunk::<{ wire::HDR }>() {
        if let Ok(hd) = wire::parse_header(h, wire::MAX_REPLY_BODY) {
            assert!(hd.len as usize <= wire::MAX_REPLY_BODY);
            if let Some(fixed) = data.get(wire::HDR..wire::READ_RESP_HEAD) {
                let _ = wire::parse_read_resp_head(fixed, hd.len);
            }
        }
    }
});
