//! Compiles the BPF programs in the top-level `bpf/` folder into libbpf skeletons in OUT_DIR.

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const PROGRAMS: &[&str] = &["sockmap", "accounting"];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest_dir.join("../bpf");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // <linux/bpf.h> reaches <asm/types.h>, which Debian keeps under the multiarch include folder.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("CARGO_CFG_TARGET_ARCH");
    let multiarch_include = format!("-idirafter/usr/include/{arch}-linux-gnu");

    for name in PROGRAMS {
        let source = bpf_dir.join(format!("{name}.bpf.c"));
        let skeleton = out_dir.join(format!("{name}.skel.rs"));
        SkeletonBuilder::new()
            .source(&source)
            .obj(out_dir.join(format!("{name}.bpf.o")))
            .clang_args(["-Wall", "-Werror", "-mcpu=v3", &multiarch_include])
            .build_and_generate(&skeleton)
            .unwrap_or_else(|err| panic!("building {}: {err:#}", source.display()));
        println!("cargo:rerun-if-changed={}", source.display());
        println!("cargo:rerun-if-changed={}", bpf_dir.join(format!("{name}.h")).display());
    }

    // insta otherwise runs `cargo metadata` to find the workspace, which the guest may not manage.
    let workspace = manifest_dir.parent().expect("testcases/ sits in the workspace root");
    println!("cargo:rustc-env=INSTA_WORKSPACE_ROOT={}", workspace.display());
}
