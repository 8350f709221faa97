//! Property tests: decoding never panics on arbitrary bytes, and encode/decode round-trip.

use memgate_proto::{
    Access, DecodeError, ExportRequest, Header, Kind, RegionSelection, RegionSpec, Request,
    Response, WaitRequest, WaitResult, WaitState, HEADER_LEN, MAX_MESSAGE, VERSION,
};
use proptest::prelude::*;

fn region() -> impl Strategy<Value = RegionSpec> {
    (any::<u64>(), any::<u64>()).prop_map(|(addr, len)| RegionSpec { addr, len })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (
            ".{0,200}",
            prop::option::of(prop::collection::vec(region(), 0..20)),
            any::<bool>(),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(token, list, rw, lease_secs, rod)| Request::Export(
                ExportRequest {
                    token,
                    regions: list.map_or(RegionSelection::All, RegionSelection::List),
                    access: if rw { Access::ReadWrite } else { Access::Read },
                    lease_secs,
                    revoke_on_disconnect: rod,
                }
            )),
        any::<[u8; 16]>().prop_map(|g| Request::Revoke {
            grant: memgate_proto::GrantId(g)
        }),
        Just(Request::List),
        Just(Request::Status),
        (any::<[u8; 16]>(), any::<u64>()).prop_map(|(g, t)| Request::Wait(WaitRequest {
            grant: memgate_proto::GrantId(g),
            timeout_ms: t
        })),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
    }

    #[test]
    fn valid_header_random_body_never_panics(kind in any::<u16>(), body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut frame = Header { version: VERSION, kind, body_len: body.len() as u32 }.to_bytes().to_vec();
        frame.extend_from_slice(&body);
        let _ = Request::decode(&frame);
        let _ = Response::decode(&frame);
    }

    #[test]
    fn requests_round_trip(req in request()) {
        let frame = req.encode().unwrap();
        prop_assert!(frame.len() <= MAX_MESSAGE);
        prop_assert_eq!(Request::decode(&frame).unwrap(), req);
    }

    #[test]
    fn truncation_is_an_error(req in request(), cut in 1usize..64) {
        let frame = req.encode().unwrap();
        let cut = cut.min(frame.len());
        prop_assert!(Request::decode(&frame[..frame.len() - cut]).is_err());
    }
}

#[test]
fn specific_errors() {
    let good = Request::Status.encode().unwrap();
    assert_eq!(
        Request::decode(&good[..5]),
        Err(DecodeError::TooShort { len: 5 })
    );
    let mut bad = good.clone();
    bad[0] = b'X';
    assert_eq!(Request::decode(&bad), Err(DecodeError::BadMagic));
    let mut bad = good.clone();
    bad[4] = 9;
    assert_eq!(
        Request::decode(&bad),
        Err(DecodeError::UnsupportedVersion { version: 9 })
    );
    let mut bad = good.clone();
    bad[6] = 0x77;
    assert_eq!(
        Request::decode(&bad),
        Err(DecodeError::UnknownKind { kind: 0x77 })
    );
    assert_eq!(
        Response::decode(&good),
        Err(DecodeError::WrongDirection {
            kind: Kind::Status as u16
        })
    );
    let huge = vec![0u8; MAX_MESSAGE + 1];
    assert_eq!(
        Request::decode(&huge),
        Err(DecodeError::TooLarge {
            len: MAX_MESSAGE + 1
        })
    );
    let mut extra = Header {
        version: VERSION,
        kind: Kind::List as u16,
        body_len: 9,
    }
    .to_bytes()
    .to_vec();
    extra.extend_from_slice(br#"{"x":1}  "#);
    assert_eq!(extra.len(), HEADER_LEN + 9);
    assert_eq!(
        Request::decode(&extra).unwrap_err().code(),
        "malformed_body"
    );
}

#[test]
fn export_json_shape() {
    let req = Request::Export(ExportRequest {
        token: "v4.public.x".into(),
        regions: RegionSelection::List(vec![RegionSpec {
            addr: 4096,
            len: 8192,
        }]),
        access: Access::Read,
        lease_secs: 60,
        revoke_on_disconnect: true,
    });
    let frame = req.encode().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&frame[HEADER_LEN..]).unwrap();
    assert_eq!(body["regions"]["list"][0]["len"], 8192);
    assert_eq!(body["access"], "read");
    let all = Request::Export(ExportRequest {
        token: "t".into(),
        regions: RegionSelection::All,
        access: Access::ReadWrite,
        lease_secs: 1,
        revoke_on_disconnect: false,
    });
    let frame = all.encode().unwrap();
    let body: serde_json::Value = serde_json::from_slice(&frame[HEADER_LEN..]).unwrap();
    assert_eq!(body["regions"], "all");
    assert_eq!(body["access"], "read-write");
    let w = Response::WaitResult(WaitResult {
        state: WaitState::Revoked,
        cause: Some("target_exit".into()),
    });
    assert_eq!(Response::decode(&w.encode().unwrap()).unwrap(), w);
}
