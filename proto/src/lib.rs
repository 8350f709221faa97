//! The broker API: wire messages between `memgate` clients and `memgated`.
