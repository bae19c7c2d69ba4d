//! Issue 13's families 4 and 5 in one test binary (each suite binary costs the guest a start and a
//! BTF load). Runs only inside a lab guest (`lab test`).
//!
//! - sending: how the data is handed to the kernel — sendfile, vmsplice + splice, many iovecs,
//!   sends larger than MAX_MSG_FRAGS pages, a cork filled by sendfile — and splice out of a
//!   target (family 4)
//! - framing: a stream parser that frames messages by a length header (family 5)

#[path = "streams/framing.rs"]
mod framing;
#[path = "streams/sending.rs"]
mod sending;
