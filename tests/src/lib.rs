//! Helpers shared by the integration tests (process spawning, users, temp keys).
