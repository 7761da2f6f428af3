// Replaced by the guard benchmark.
fn main() {}
