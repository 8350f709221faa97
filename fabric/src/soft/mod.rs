//! The soft provider: verbs semantics over TCP or Unix stream sockets. Wire format in
//! `docs/fabric-soft.md`; [`wire`] is the frame codec.

mod auth;
pub(crate) mod authlog;
mod initiator;
mod responder;
mod serve;
mod stream;
mod table;
pub mod wire;

pub use crate::auth::public_key_from_seed;
pub(crate) use auth::{keypair as auth_keypair, PROOF as AUTH_PROOF};
pub use initiator::SoftConnection;
pub use responder::{SoftLimits, SoftResponder, MAX_CONNECTIONS};
