//! memgate: the command-line client.
fn main() {}
