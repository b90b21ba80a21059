//! Compiles `proto/onnx.proto` with prost-build, parsing it with `protox` so that no
//! `protoc` binary is needed.
//!
//! The manifest folder is read at run time, not with `env!`: a target folder shared by
//! several clones of the repository would otherwise reuse a build script compiled with
//! another clone's path.

use std::path::PathBuf;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let proto_dir = PathBuf::from(manifest).join("../../proto");
    let proto = proto_dir.join("onnx.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let descriptors = match protox::compile([&proto], [&proto_dir]) {
        Ok(d) => d,
        Err(e) => panic!("proto/onnx.proto does not compile: {e}"),
    };
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    if let Err(e) = config.compile_fds(descriptors) {
        panic!("prost-build failed on proto/onnx.proto: {e}");
    }
}
