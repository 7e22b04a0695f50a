//! Empty on purpose: every workspace member depends on this crate so that its Cargo.toml, written
//! by `cargo hakari generate`, turns on the union of every dependency's features in every build.
//! Then `cargo run -p lambda-vision-cli`, `cargo test --workspace` and `cargo build -p trainer`
//! share one compiled copy of tract, the AWS SDK and the rest instead of building their own.
