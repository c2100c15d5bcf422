//! Compiles `proto/*.proto` with the vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe_env_set("PROTOC", protoc);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["history.proto", "presence.proto"].map(|f| root.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    tonic_prost_build::configure().compile_protos(&files, &[root])?;
    Ok(())
}

fn unsafe_env_set(key: &str, value: std::path::PathBuf) {
    // `set_var` is unsafe in edition 2024 because other threads may read the environment;
    // a build script has no other threads.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(key, value)
    };
}
