//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the
//! descriptor set that the reflection service serves.
use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files = Vec::new();
    for entry in fs::read_dir("proto/loyalty/v1")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("loyalty_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .include_file("protos.rs")
        .compile_fds(fds)?;
    Ok(())
}
