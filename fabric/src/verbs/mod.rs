//! The verbs provider (feature `verbs`).
