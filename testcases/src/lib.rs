//! The sockmap redirect-path suite's helpers. The cases themselves are in tests/redirect.rs and run
//! inside a lab guest only (`lab test`), as root, each in a network namespace of its own.
//!
//! A case loads bpf/sockmap.bpf.c (compiled into a skeleton by build.rs), steers it through its
//! `config` map, builds two connected socket pairs (A and its peer, B and its peer), puts A and B in
//! a sockmap or sockhash, moves data, and records what every socket saw as an [`Observation`], which
//! is compared with an insta snapshot in the top-level snapshots/ folder. Every case is also audited
//! (accounting.rs, bpf/accounting.bpf.c): each socket it created must be destroyed with its memory
//! counters at zero, /proc/net/sockstat must come back to its baseline, and the kernel must log no
//! splat; the outcome is part of the snapshot, and anything unclean fails the case regardless.

pub mod accounting;
pub mod bpf;
mod case;
mod concurrent;
mod disruption;
pub mod family;
pub mod guest;
pub mod kmsg;
mod ktls;
mod listener;
pub mod observation;
pub mod patience;
pub mod payload;
pub mod rig;
mod sending;
pub mod sys;

pub use bpf::{Action, Config, Hook, MapKind, PUSH_FILL};
pub use case::run_case;
pub use family::Family;
pub use ktls::TlsDir;
pub use observation::{Observation, Role};
pub use payload::{pattern, Payload};
pub use rig::{Path, Rig, Scenario, KEY_A, KEY_B};
pub use sending::SendCall;
