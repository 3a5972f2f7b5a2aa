//! Generates the gRPC server code of the Kubernetes KMS v2 plugin from
//! `proto/kubernetes_kms_v2.proto`, with the vendored protoc: a build needs no system
//! protoc, and the generated code always matches the checked-in `.proto`.

fn main() {
    println!("cargo:rerun-if-changed=proto/kubernetes_kms_v2.proto");
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("a vendored protoc for this platform");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        .build_client(false)
        .compile_with_config(config, &["proto/kubernetes_kms_v2.proto"], &["proto"])
        .expect("compile proto/kubernetes_kms_v2.proto");
}
