//! What a case needs from the guest it runs in.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;

use crate::sys::Sock;

/// The suite attaches BPF programs and unshares namespaces as root: on a developer's host that
/// would at best fail and at worst disturb the host's own sockets.
pub fn require_guest() {
    if std::env::var("LAB_IN_GUEST").is_err() {
        panic!("runs only inside a lab guest: use `lab test`");
    }
}

/// libbpf logs to stderr directly by default, which libtest does not capture: its lines would land in
/// the middle of libtest's own. Through eprint! they are captured, and shown with a failing case.
pub fn capture_libbpf_log() {
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, |_, msg| eprint!("{msg}"))));
}

/// Moves the calling thread into a new network namespace with `lo` up, so that no port, socket or
/// map entry of one case can be seen by the next.
pub fn enter_fresh_netns() -> io::Result<()> {
    // SAFETY: plain syscall; it affects the calling thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    bring_up_loopback()
}

fn loopback_request() -> libc::ifreq {
    // SAFETY: ifreq is plain data; all-zero is a valid empty request.
    let mut ifr: libc::ifreq = unsafe { MaybeUninit::zeroed().assume_init() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    ifr
}

/// Sets the MTU of the namespace's loopback. At loopback's own 64 KiB, a receive window smaller
/// than one segment is always advertised as zero (receiver-side silly window avoidance), and data
/// to a socket with a tiny SO_RCVBUF only moves on the zero-window probes' backed-off timer: the
/// memory-pressure cases use an Ethernet MTU, where small windows work as on a real network.
pub fn set_loopback_mtu(mtu: i32) -> io::Result<()> {
    let sock = Sock::new(libc::AF_INET, libc::SOCK_DGRAM).map_err(io::Error::from)?;
    let mut ifr = loopback_request();
    ifr.ifr_ifru.ifru_mtu = mtu;
    // SAFETY: SIOCSIFMTU reads the ifreq we pass.
    if unsafe { libc::ioctl(sock.raw(), libc::SIOCSIFMTU, &ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bring_up_loopback() -> io::Result<()> {
    let sock = Sock::new(libc::AF_INET, libc::SOCK_DGRAM).map_err(io::Error::from)?;
    let mut ifr = loopback_request();
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.raw(), libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.raw(), libc::SIOCSIFFLAGS, &ifr) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: uname fills the struct; all-zero is a valid starting value.
    let mut uts: libc::utsname = unsafe { MaybeUninit::zeroed().assume_init() };
    // SAFETY: `uts` is a valid utsname to fill.
    if unsafe { libc::uname(&mut uts) } != 0 {
        panic!("uname: {}", io::Error::last_os_error());
    }
    // SAFETY: the kernel NUL-terminates the release field.
    unsafe { CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy().into_owned()
}

/// The kernel's major.minor ("6.12" for "6.12.57+deb13-amd64"): the key for snapshots that
/// differ between kernel series.
pub fn kernel_family(release: &str) -> String {
    let mut parts = release.split('.');
    let major = parts.next().unwrap_or_default();
    let minor: String = parts.next().unwrap_or_default().chars().take_while(char::is_ascii_digit).collect();
    format!("{major}.{minor}")
}

/// The family whose snapshot variants a case is compared with: the guest's own, unless the lab
/// asks to judge by another (`LAB_JUDGE_AS`): a bisect across releases judges every kernel by
/// one family's snapshots, so that the first release which no longer behaves as that family did
/// reads as bad.
pub fn snapshot_family(release: &str, judge_as: Option<&str>) -> String {
    match judge_as {
        Some(family) if !family.is_empty() => family.to_string(),
        _ => kernel_family(release),
    }
}

#[cfg(test)]
mod tests {
    use super::{kernel_family, snapshot_family};

    #[test]
    fn judging_as_another_family_overrides_the_guests_own() {
        assert_eq!(snapshot_family("7.3.4+deb13-amd64", Some("6.1")), "6.1");
        assert_eq!(snapshot_family("7.3.4+deb13-amd64", Some("")), "7.3");
        assert_eq!(snapshot_family("6.1.0-56-amd64", None), "6.1");
    }

    #[test]
    fn kernel_family_is_major_dot_minor() {
        assert_eq!(kernel_family("6.12.57+deb13-amd64"), "6.12");
        assert_eq!(kernel_family("6.1.0-56-amd64"), "6.1");
        assert_eq!(kernel_family("6.12-rc3"), "6.12");
    }
}
