//! memgate client library: broker requests, tokens, policy signing and the fault server.
//!
//! The binary `memgate` is a thin shell over [`cli`]; every subcommand lives in its own
//! module there so that each can be read (and tested) on its own.

pub mod cli;
