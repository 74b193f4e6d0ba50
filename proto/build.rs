//! Compiles `proto/agent.proto` with protox (pure Rust), so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/ocore/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Their `Debug` is written by hand (src/lib.rs) so a secret never prints.
        .skip_debug(["ocore.agent.v1.SshKey", "ocore.agent.v1.HttpsToken"])
        .compile_fds(descriptors)?;
    Ok(())
}
