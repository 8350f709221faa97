//! The conformance cases. (Recovered work in progress: the case list is being rebuilt.)

use super::Case;

/// Every case, in the order they run.
pub(super) static ALL: &[Case] = &[];
