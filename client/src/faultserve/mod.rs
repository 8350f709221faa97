//! The unprivileged userfaultfd fault server: page table ([`layout`]), the serving loop
//! ([`engine`]), its statistics ([`stats`]) and the check of a hand-over's pid ([`dest`]).

pub mod dest;
pub mod engine;
pub mod layout;
pub mod stats;

pub use engine::{Closed, Config, Engine, EngineError, OnFailure, Outcome};
pub use layout::{Layout, Region};
pub use stats::Report;
