//! memgated: the privileged memgate broker.
fn main() {}
