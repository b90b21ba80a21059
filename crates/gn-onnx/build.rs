//! Compiles `proto/onnx.proto` with prost-build, parsing it with `protox` so that no
//! `protoc` binary is needed.

fn main() {
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let proto = format!("{proto_dir}/onnx.proto");
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = match protox::compile([&proto], [proto_dir]) {
        Ok(d) => d,
        Err(e) => panic!("proto/onnx.proto does not compile: {e}"),
    };
    let mut config = prost_build::Config::new();
    config.bytes(["."]);
    if let Err(e) = config.compile_fds(descriptors) {
        panic!("prost-build failed on proto/onnx.proto: {e}");
    }
}
