//! The blocking client and the transport helpers pass fds and frames over a real socketpair.

use std::os::fd::AsFd;

use memgate_proto::transport::{recv_frame, send_frame};
use memgate_proto::{BrokerClient, Request, Response, StatusInfo, MAX_MESSAGE};
use rustix::net::{socketpair, AddressFamily, RecvFlags, SocketFlags, SocketType};

#[test]
fn status_call_with_fds_round_trips() {
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let got = recv_frame(b.as_fd(), &mut buf, RecvFlags::empty()).unwrap();
        assert!(!got.truncated);
        assert_eq!(got.fds.len(), 2);
        assert_eq!(Request::decode(&buf[..got.len]).unwrap(), Request::Status);
        let reply = Response::Status(StatusInfo {
            broker_id: "b".into(),
            version: "1".into(),
            policy_serial: 3,
            endpoint: "tcp:127.0.0.1:1".into(),
            active_grants: 0,
            active_bytes: 0,
            caller_grants: 0,
            registered_keys: 0,
            admitted: 0,
            denied: got.fds.len() as u64,
            uptime_secs: 0,
        });
        send_frame(b.as_fd(), &reply.encode().unwrap(), &[]).unwrap();
    });
    let file = std::fs::File::open("/dev/null").unwrap();
    let mut client = BrokerClient::from_fd(a);
    let reply = client
        .call(&Request::Status, &[file.as_fd(), file.as_fd()])
        .unwrap();
    server.join().unwrap();
    match reply {
        Response::Status(s) => assert_eq!((s.policy_serial, s.denied), (3, 2)),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn oversized_packet_reports_truncation() {
    let (a, b) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap();
    let big = vec![7u8; MAX_MESSAGE + 100];
    send_frame(a.as_fd(), &big, &[]).unwrap();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let got = recv_frame(b.as_fd(), &mut buf, RecvFlags::empty()).unwrap();
    assert!(got.truncated);
    assert_eq!(got.len, MAX_MESSAGE + 100);
}
