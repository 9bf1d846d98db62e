//! Compiles Folio's protos with tonic's prost builder and a vendored `protoc`, so a fresh machine
//! needs no system protobuf compiler.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    // The manifest dir of this build, read at run time: `env!` would bake in the checkout that
    // compiled the build script, and checkouts sharing one target directory (CI clones next to
    // a working copy) reuse that binary, which then compiled the other checkout's protos.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let protos = [
        "folio/volume/v1/volume.proto",
        "folio/raft/v1/raft.proto",
        "folio/admin/v1/admin.proto",
        "folio/registry/v1/registry.proto",
    ]
    .map(|p| root.join(p));
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Page payloads and raft messages as `bytes::Bytes`: no copy between the wire and the log.
        .bytes(".")
        // prost's codec, but an undecodable message is INVALID_ARGUMENT, not INTERNAL.
        .codec_path("crate::codec::Codec")
        .file_descriptor_set_path(out.join("folio_descriptor.bin"))
        .compile_protos(&protos, std::slice::from_ref(&root))?;
    // Relative to the package root, so the check follows whichever checkout is being built.
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
