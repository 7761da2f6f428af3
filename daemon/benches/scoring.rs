// Replaced by the scoring benchmark.
fn main() {}
