//! How long a wait without progress goes on before a case gives up on it, counted in time the guest
//! itself ran.
//!
//! Under TCG on a busy host the guest can stand still for seconds (its vCPU thread not scheduled)
//! while its clock keeps up with the host's: a bound in plain guest wall time then runs out while
//! the kernel under test never had a chance to make progress, and the case fails on the host's
//! load. So a wait is cut into slices, and a slice counts for no more than its own length however
//! late the guest woke from it (the accounting wait does the same), and the bound is multiplied by
//! LAB_WAIT_SCALE (debug kernels). A wait that does give up says so: [`Patience::stalled`].

use std::time::{Duration, Instant};

/// The longest single sleep of a wait: what one stand-still of the guest can cost the bound.
pub const SLICE: Duration = Duration::from_millis(100);

/// `bound` times LAB_WAIT_SCALE (at least 1; anything unparsable counts as 1).
pub fn scaled(bound: Duration) -> Duration {
    bound * scale(std::env::var("LAB_WAIT_SCALE").ok().as_deref())
}

fn scale(setting: Option<&str>) -> u32 {
    setting.and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(1).max(1)
}

/// One bounded wait for progress.
#[derive(Debug, Clone)]
pub struct Patience {
    bound: Duration,
    /// Time charged since the last progress: each slice at most its own length.
    charged: Duration,
    /// Wall time since the last progress, for the report.
    since: Instant,
}

impl Patience {
    /// A wait of `bound` (unscaled) without progress.
    pub fn new(bound: Duration) -> Self {
        Self::exact(scaled(bound))
    }

    /// A wait of exactly `bound`, not scaled.
    pub fn exact(bound: Duration) -> Self {
        Self { bound, charged: Duration::ZERO, since: Instant::now() }
    }

    /// What is left of the bound.
    pub fn left(&self) -> Duration {
        self.bound.saturating_sub(self.charged)
    }

    pub fn exhausted(&self) -> bool {
        self.left().is_zero()
    }

    /// How long the next sleep may be: a slice, or what is left if less.
    pub fn slice(&self) -> Duration {
        self.left().min(SLICE)
    }

    /// A sleep of `slice` took `elapsed` of guest wall time: charge at most `slice` for it.
    pub fn spent(&mut self, slice: Duration, elapsed: Duration) {
        self.charged += elapsed.min(slice);
    }

    /// Runs `sleep` for one slice (it gets the slice's length) and charges it; returns what it did.
    pub fn sleep<T>(&mut self, sleep: impl FnOnce(Duration) -> T) -> T {
        let slice = self.slice();
        let started = Instant::now();
        let result = sleep(slice);
        self.spent(slice, started.elapsed());
        result
    }

    /// Something moved: the bound starts over.
    pub fn progress(&mut self) {
        self.charged = Duration::ZERO;
        self.since = Instant::now();
    }

    /// The words a case that gave up prints: "stalled: <what>: nothing moved for 2.0 s of guest
    /// run time (2.3 s wall)".
    pub fn stalled(&self, what: &str) -> String {
        stall_message(what, self.charged, self.since.elapsed())
    }
}

fn stall_message(what: &str, charged: Duration, wall: Duration) -> String {
    format!(
        "stalled: {what}: nothing moved for {:.1} s of guest run time ({:.1} s wall)",
        charged.as_secs_f64(),
        wall.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_that_stood_still_does_not_use_up_the_bound() {
        let mut wait = Patience::exact(Duration::from_secs(2));
        // The guest slept 100 ms but woke 5 s later: only the slice counts.
        wait.spent(SLICE, Duration::from_secs(5));
        assert_eq!(wait.left(), Duration::from_millis(1900));
        assert!(!wait.exhausted());
        for _ in 0..19 {
            wait.spent(wait.slice(), wait.slice());
        }
        assert!(wait.exhausted(), "{:?} left", wait.left());
    }

    #[test]
    fn progress_starts_the_bound_over_and_the_last_slice_is_what_is_left() {
        let mut wait = Patience::exact(Duration::from_millis(150));
        wait.spent(SLICE, SLICE);
        assert_eq!(wait.slice(), Duration::from_millis(50));
        wait.progress();
        assert_eq!(wait.left(), Duration::from_millis(150));
        assert_eq!(wait.slice(), SLICE);
    }

    #[test]
    fn the_scale_multiplies_and_never_shrinks() {
        assert_eq!(scale(Some("6")), 6);
        assert_eq!(scale(Some("0")), 1);
        assert_eq!(scale(Some("x")), 1);
        assert_eq!(scale(None), 1);
    }

    #[test]
    fn a_stall_says_what_it_waited_for_and_how_long() {
        let text = stall_message("b to receive 4096 bytes (got 1024)", Duration::from_secs(2), Duration::from_millis(7300));
        assert_eq!(text, "stalled: b to receive 4096 bytes (got 1024): nothing moved for 2.0 s of guest run time (7.3 s wall)");
    }
}
