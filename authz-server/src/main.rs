//! certbind-authz: the authorization server and internal CA (work in progress).
fn main() {}
