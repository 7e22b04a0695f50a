//! Present only so that cargo reads this crate's `[build-dependencies]` (hakari unifies the
//! features of build scripts' dependencies too).
fn main() {}
