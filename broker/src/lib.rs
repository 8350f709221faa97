//! memgated library: admission, grants, revocation, audit, hardening.
