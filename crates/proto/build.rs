//! Compiles `proto/*.proto` with the vendored protoc, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single-threaded; prost-build reads PROTOC.
    unsafe_env_set("PROTOC", protoc);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["history.proto", "presence.proto", "accounts.proto"].map(|f| root.join(f));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    // Messages holding a password or a token get a redacted Debug (crate::accounts_ext),
    // so logging a request can never print a secret.
    let secret_bearing = SECRET_BEARING.map(|m| format!("chat.accounts.v1.{m}"));
    tonic_prost_build::configure()
        .skip_debug(secret_bearing)
        .compile_protos(&files, &[root])?;
    Ok(())
}

/// The accounts messages with a password or token field; their Debug is written by hand.
const SECRET_BEARING: [&str; 11] = [
    "SignUpRequest",
    "LogInRequest",
    "RefreshRequest",
    "AuthReply",
    "BearerRequest",
    "LogOutRequest",
    "ChangePasswordRequest",
    "UpdateDisplayNameRequest",
    "DeleteAccountRequest",
    "GetUsersRequest",
    "SearchUsersRequest",
];

fn unsafe_env_set(key: &str, value: std::path::PathBuf) {
    // `set_var` is unsafe in edition 2024 because other threads may read the environment;
    // a build script has no other threads.
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var(key, value)
    };
}
