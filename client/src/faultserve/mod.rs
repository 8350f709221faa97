//! The unprivileged userfaultfd fault server: page table ([`layout`]), the serving loop
//! ([`engine`]) and its statistics ([`stats`]).

pub mod engine;
pub mod layout;
pub mod stats;

pub use engine::{Config, Engine, EngineError, OnFailure, Outcome};
pub use layout::{Layout, Region};
pub use stats::Report;
