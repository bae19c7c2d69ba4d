//! Compiles bpf/sockmap.bpf.c, the programs the redirect-path suite uses, into a libbpf skeleton in
//! OUT_DIR: the bench measures the same programs the suite checks.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest_dir.join("../bpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // <linux/bpf.h> reaches <asm/types.h>, which Debian keeps under the multiarch include folder.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let multiarch_include = format!("-idirafter/usr/include/{arch}-linux-gnu");

    let source = bpf_dir.join("sockmap.bpf.c");
    SkeletonBuilder::new()
        .source(&source)
        .obj(out_dir.join("sockmap.bpf.o"))
        .clang_args(["-Wall", "-Werror", "-mcpu=v3", &multiarch_include])
        .build_and_generate(out_dir.join("sockmap.skel.rs"))
        .unwrap_or_else(|err| panic!("building {}: {err:#}", source.display()));
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", bpf_dir.join("sockmap.h").display());
}
