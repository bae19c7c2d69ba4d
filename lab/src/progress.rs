//! Progress for long steps: an indicatif spinner on a terminal, plain step lines otherwise (CI logs).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Step {
    bar: Option<ProgressBar>,
    name: String,
    started: Instant,
}

impl Step {
    pub fn start(name: &str) -> Step {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new_spinner();
            bar.set_style(ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {wide_msg}").unwrap());
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            eprintln!("lab: {name}...");
            None
        };
        Step { bar, name: name.to_string(), started: Instant::now() }
    }

    pub fn message(&self, msg: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg.to_string());
        }
    }

    /// Print an occasional line on non-terminals so a long CI step is visibly alive.
    pub fn heartbeat(&self, every: Duration, last: &mut Instant, msg: &str) {
        if self.bar.is_none() && last.elapsed() >= every {
            eprintln!("lab: {}: {msg} ({:.0}s)", self.name, self.started.elapsed().as_secs_f64());
            *last = Instant::now();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(&self, msg: &str) -> Duration {
        let took = self.started.elapsed();
        let line = format!("lab: {}: {msg} ({:.1}s)", self.name, took.as_secs_f64());
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        eprintln!("{line}");
        took
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
