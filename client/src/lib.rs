//! memgate client library: broker requests, tokens, the fault server.
