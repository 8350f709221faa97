//! Requests and responses, their JSON bodies, and frame encode/decode.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::frame::{build, DecodeError, EncodeError, Header, Kind, HEADER_LEN};
use crate::grant::{Access, Grant, GrantId};

/// One region asked for by address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    /// Start address in the target (page-aligned).
    pub addr: u64,
    /// Length in bytes (non-zero, page multiple).
    pub len: u64,
}

/// Which regions an export asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RegionSelection {
    /// Every mapping of a kind the policy allows (JSON: `"all"`).
    All,
    /// Exactly these ranges (JSON: `{"list": [{"addr":..,"len":..}]}`).
    List(Vec<RegionSpec>),
}

/// Body of an `Export` request. Sent with three fds: pidfd, `/proc/<pid>/mem`,
/// `/proc/<pid>/maps` (see [`crate::EXPORT_FDS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    /// PASETO v4.public export token.
    pub token: String,
    /// Regions to export.
    pub regions: RegionSelection,
    /// Access asked for.
    #[serde(default)]
    pub access: Access,
    /// Lease length in seconds (capped by policy and token).
    pub lease_secs: u64,
    /// Revoke the grant when this connection closes.
    #[serde(default)]
    pub revoke_on_disconnect: bool,
}

/// Body of a `Revoke` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Grant to revoke.
    pub grant: GrantId,
}

/// Body of a `Wait` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitRequest {
    /// Grant to wait for.
    pub grant: GrantId,
    /// Give up after this many milliseconds.
    pub timeout_ms: u64,
}

/// Empty body (`{}`) of `List` and `Status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// A request from a client to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Export memory of a target process.
    Export(ExportRequest),
    /// Revoke a grant (its creator or root only).
    Revoke {
        /// Grant id.
        grant: GrantId,
    },
    /// The caller's own grants.
    List,
    /// Broker status.
    Status,
    /// Block until the grant is committed, revoked or expired, or the timeout passes.
    Wait(WaitRequest),
}

/// One reason for a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    /// Stable snake_case code.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

/// A denial: the first failing step's code plus every reason found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denied {
    /// Stable snake_case code of the decisive reason.
    pub code: String,
    /// All reasons.
    pub reasons: Vec<Reason>,
}

/// Lifecycle state of a live grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// Issued, not yet committed by its peer.
    Active,
    /// The peer sent `COMMIT`.
    Committed,
}

/// One entry of a `Grants` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSummary {
    /// The grant document.
    pub grant: Grant,
    /// Its state.
    pub state: GrantState,
    /// Target pid (in the broker's pid namespace).
    pub target_pid: i32,
    /// Uid that created it.
    pub uid: u32,
}

/// Broker status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusInfo {
    /// Broker id (token audience).
    pub broker_id: String,
    /// Broker version.
    pub version: String,
    /// Serial of the policy in force.
    pub policy_serial: u64,
    /// Fabric endpoint.
    pub endpoint: String,
    /// Live grants (all uids).
    pub active_grants: u64,
    /// Bytes covered by live grants (all uids).
    pub active_bytes: u64,
    /// Live grants of the caller.
    pub caller_grants: u64,
    /// Restricted keys currently registered in the fabric.
    pub registered_keys: u64,
    /// Exports admitted since start.
    pub admitted: u64,
    /// Requests denied since start.
    pub denied: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
}

/// Outcome of a `Wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitState {
    /// The peer committed the grant.
    Committed,
    /// The grant was revoked (see `cause`).
    Revoked,
    /// The lease ran out.
    Expired,
    /// The timeout passed first.
    Timeout,
}

/// Body of a `WaitResult` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitResult {
    /// What happened.
    pub state: WaitState,
    /// Revocation cause, e.g. `target_exit`, `explicit`, `policy_reload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// Body of an `Error` reply: the request was not understood or could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// Stable snake_case code.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsBody {
    grants: Vec<GrantSummary>,
}

/// A response from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The export was admitted.
    Grant(Grant),
    /// The request was denied.
    Denied(Denied),
    /// The caller's grants.
    Grants(Vec<GrantSummary>),
    /// Broker status.
    Status(StatusInfo),
    /// Outcome of a `Wait`.
    WaitResult(WaitResult),
    /// The request was malformed or failed.
    Error(ErrorReply),
}

fn body_of<T: DeserializeOwned>(frame: &[u8]) -> Result<T, DecodeError> {
    let body = frame.get(HEADER_LEN..).unwrap_or_default();
    serde_json::from_slice(body).map_err(|e| DecodeError::Body(e.to_string()))
}

fn frame_of<T: Serialize>(kind: Kind, body: &T) -> Result<Vec<u8>, EncodeError> {
    build(kind, &serde_json::to_vec(body)?)
}

fn kind_of(frame: &[u8]) -> Result<Kind, DecodeError> {
    let header = Header::parse(frame)?;
    Kind::from_u16(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })
}

impl Request {
    /// The frame kind for this request.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Export(_) => Kind::Export,
            Request::Revoke { .. } => Kind::Revoke,
            Request::List => Kind::List,
            Request::Status => Kind::Status,
            Request::Wait(_) => Kind::Wait,
        }
    }

    /// Encodes the request as one frame.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Request::Export(e) => frame_of(Kind::Export, e),
            Request::Revoke { grant } => frame_of(Kind::Revoke, &RevokeRequest { grant: *grant }),
            Request::List => frame_of(Kind::List, &Empty {}),
            Request::Status => frame_of(Kind::Status, &Empty {}),
            Request::Wait(w) => frame_of(Kind::Wait, w),
        }
    }

    /// Decodes one frame (the whole packet). Never panics.
    pub fn decode(frame: &[u8]) -> Result<Request, DecodeError> {
        let kind = kind_of(frame)?;
        Ok(match kind {
            Kind::Export => Request::Export(body_of(frame)?),
            Kind::Revoke => Request::Revoke {
                grant: body_of::<RevokeRequest>(frame)?.grant,
            },
            Kind::List => {
                body_of::<Empty>(frame)?;
                Request::List
            }
            Kind::Status => {
                body_of::<Empty>(frame)?;
                Request::Status
            }
            Kind::Wait => Request::Wait(body_of(frame)?),
            other => return Err(DecodeError::WrongDirection { kind: other as u16 }),
        })
    }

    /// Number of fds this request must carry.
    pub fn expected_fds(&self) -> usize {
        match self {
            Request::Export(_) => crate::EXPORT_FDS,
            _ => 0,
        }
    }
}

impl Response {
    /// The frame kind for this response.
    pub fn kind(&self) -> Kind {
        match self {
            Response::Grant(_) => Kind::GrantReply,
            Response::Denied(_) => Kind::DeniedReply,
            Response::Grants(_) => Kind::GrantsReply,
            Response::Status(_) => Kind::StatusReply,
            Response::WaitResult(_) => Kind::WaitReply,
            Response::Error(_) => Kind::ErrorReply,
        }
    }

    /// Encodes the response as one frame.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Response::Grant(g) => frame_of(Kind::GrantReply, g),
            Response::Denied(d) => frame_of(Kind::DeniedReply, d),
            Response::Grants(g) => frame_of(Kind::GrantsReply, &GrantsBody { grants: g.clone() }),
            Response::Status(s) => frame_of(Kind::StatusReply, s),
            Response::WaitResult(w) => frame_of(Kind::WaitReply, w),
            Response::Error(e) => frame_of(Kind::ErrorReply, e),
        }
    }

    /// Decodes one frame (the whole packet). Never panics.
    pub fn decode(frame: &[u8]) -> Result<Response, DecodeError> {
        let kind = kind_of(frame)?;
        Ok(match kind {
            Kind::GrantReply => Response::Grant(body_of(frame)?),
            Kind::DeniedReply => Response::Denied(body_of(frame)?),
            Kind::GrantsReply => Response::Grants(body_of::<GrantsBody>(frame)?.grants),
            Kind::StatusReply => Response::Status(body_of(frame)?),
            Kind::WaitReply => Response::WaitResult(body_of(frame)?),
            Kind::ErrorReply => Response::Error(body_of(frame)?),
            other => return Err(DecodeError::WrongDirection { kind: other as u16 }),
        })
    }

    /// Convenience constructor for an `Error` reply.
    pub fn error(code: &str, message: impl Into<String>) -> Response {
        Response::Error(ErrorReply {
            code: code.to_owned(),
            message: message.into(),
        })
    }
}
