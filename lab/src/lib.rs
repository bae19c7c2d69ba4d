//! sockmap-lab: build a kernel from a definition, boot it under virtme-ng, run things in it.
//!
//! Data flows one way through the stages, each a module: `definition` → `source` → `patches` →
//! `kconfig` → `build` (into the `cache`) → `vm` (with `accel` choosing KVM or TCG) → `shards` (one run dealt to several guests) → `suite`
//! (cases run in the guest, their observations in `cases`, judged against `findings`; beside it
//! `selftests`, the kernel's own sockmap selftests) → `matrix`,
//! `mutants`, `bench`, `bisect` (the engines that run many) → `render` (every printed or written
//! format) → `cli` (one handler per subcommand). No module imports from a stage after its own;
//! `runs` gives every run a results folder of its own.

pub mod accel;
pub mod apt;
pub mod bench;
pub mod bisect;
pub mod cases;
pub mod build;
pub mod cli;
pub mod cache;
pub mod definition;
pub mod findings;
pub mod kconfig;
pub mod matrix;
pub mod mutants;
pub mod patches;
pub mod process;
pub mod progress;
pub mod render;
pub mod runs;
pub mod selftests;
pub mod shards;
pub mod source;
pub mod suite;
pub mod vm;
