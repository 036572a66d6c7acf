//! certbind-pdp: the policy decision point (work in progress).
fn main() {}
