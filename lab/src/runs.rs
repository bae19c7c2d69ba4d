//! Runs that never trip over each other on disk. Every run (a kernel's suite, a matrix, a bench, a
//! mutants session) writes into a folder of its own, `<group>/runs/<run id>/`, and only when it is
//! complete points `<group>/latest` at it. Two runs of one kernel at once (a matrix and a `lab
//! test`) each keep what they wrote; a reader of `latest` sees one whole run, never half of two.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;

/// The link to the last run that finished, beside `runs/`.
pub const LATEST: &str = "latest";

/// One run's folder, created empty and owned by this run alone.
#[derive(Debug, Clone)]
pub struct Run {
    /// `20261202T210356.123Z-4242-0`: UTC start to the millisecond, so ids sort by start; then
    /// the process and a counter, so runs started in the same millisecond differ.
    pub id: String,
    /// When the run started, RFC 3339 (UTC, seconds).
    pub date: String,
    pub dir: PathBuf,
    group: PathBuf,
}

/// Runs started by this process so far: two threads (a matrix's guests) never share an id.
static STARTED: AtomicU64 = AtomicU64::new(0);
/// Files replaced by this process so far: no two writers share a temporary name.
static REPLACED: AtomicU64 = AtomicU64::new(0);

/// Start a run of `group` (e.g. `results/debian-6.12`): a new, empty `group/runs/<id>/`.
pub fn start(group: &Path) -> anyhow::Result<Run> {
    let runs = group.join("runs");
    std::fs::create_dir_all(&runs).with_context(|| format!("creating {}", runs.display()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    loop {
        let id = run_id(now.as_millis(), std::process::id(), STARTED.fetch_add(1, Ordering::Relaxed));
        let dir = runs.join(&id);
        // create_dir, not create_dir_all: the folder that exists already is another run's (the
        // same pid in another container sharing this disk), never to be written into.
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(Run { id, date: rfc3339(now.as_secs()), dir, group: group.to_path_buf() }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
}

impl Run {
    /// Point `group/latest` at this run. The link is made under a name of this run's own and
    /// renamed over `latest`: rename replaces it in one step, so a reader finds the old run or
    /// the new one, and of two runs finishing together the later rename wins whole.
    pub fn publish(&self) -> anyhow::Result<()> {
        // Relative, so the results folder can be moved or copied whole.
        let target = Path::new("runs").join(&self.id);
        replace(&self.group.join(LATEST), |tmp| std::os::unix::fs::symlink(&target, tmp))
            .with_context(|| format!("pointing {}/{LATEST} at run {}", self.group.display(), self.id))
    }
}

/// Put what `make` creates at a temporary name in place of `dest`, in one rename: a reader finds
/// the old file (or link) or the new one, never a missing or half-written one. The temporary name
/// is this process's and thread's own, so two writers never share it.
pub fn replace(dest: &Path, make: impl FnOnce(&Path) -> std::io::Result<()>) -> anyhow::Result<()> {
    let name = dest.file_name().context("no file name")?.to_string_lossy();
    let tmp = dest.with_file_name(format!(".{name}.{}-{}", std::process::id(), REPLACED.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&tmp);
    make(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).with_context(|| format!("replacing {}", dest.display()))
}

/// Write `text` to `path` whole, as [`replace`] does.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    replace(path, |tmp| std::fs::write(tmp, text))
}

fn run_id(unix_millis: u128, pid: u32, seq: u64) -> String {
    let (secs, millis) = ((unix_millis / 1000) as u64, unix_millis % 1000);
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}.{millis:03}Z-{pid}-{seq}")
}

/// `2026-12-02T21:03:56Z`.
pub fn rfc3339(unix_secs: u64) -> String {
    let (y, mo, d, h, mi, s) = civil(unix_secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// UTC calendar date and time of a Unix time (Howard Hinnant's days-to-civil; no time zone data
/// needed, and no dependency for one conversion).
fn civil(unix_secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_utc_and_sort_by_start() {
        assert_eq!(run_id(1_796_245_436_123, 4242, 0), "20261202T210356.123Z-4242-0");
        assert_eq!(rfc3339(1_796_245_436), "2026-12-02T21:03:56Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert!(run_id(1_796_245_436_123, 9, 0) < run_id(1_796_245_437_000, 1, 0));
    }

    #[test]
    fn runs_started_at_once_get_folders_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("debian-6.12");
        let runs: Vec<Run> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| start(&group).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 8, "{ids:?}");
        assert!(runs.iter().all(|r| r.dir.is_dir() && std::fs::read_dir(&r.dir).unwrap().next().is_none()));
    }

    #[test]
    fn latest_points_at_the_last_run_published_and_never_at_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let group = dir.path().join("k");
        let (first, second) = (start(&group).unwrap(), start(&group).unwrap());
        std::fs::write(first.dir.join("summary.json"), "first").unwrap();
        std::fs::write(second.dir.join("summary.json"), "second").unwrap();
        let latest = group.join(LATEST).join("summary.json");
        assert!(!latest.exists(), "no run is latest before one finishes");
        second.publish().unwrap();
        assert_eq!(std::fs::read_to_string(&latest).unwrap(), "second");
        // A reader polling while the link is switched back and forth always finds a whole run.
        let stop = std::sync::atomic::AtomicBool::new(false);
        let reads = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&latest).expect("latest is always a run");
                    assert!(text == "first" || text == "second", "{text}");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            });
            // On a busy host the reader may not run before 200 switches are over: switch until it has
            // read meanwhile, and always as "second" last.
            let mut i = 0;
            while i < 200 || reads.load(Ordering::Relaxed) == 0 || i % 2 == 1 {
                if i % 2 == 0 { &first } else { &second }.publish().unwrap();
                i += 1;
            }
            stop.store(true, Ordering::Relaxed);
            reader.join().unwrap();
            assert!(reads.load(Ordering::Relaxed) > 0);
        });
        assert_eq!(std::fs::read_to_string(&latest).unwrap(), "second");
        assert_eq!(std::fs::read_link(group.join(LATEST)).unwrap(), Path::new("runs").join(&second.id));
        let left: Vec<_> = std::fs::read_dir(&group).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "only runs/ and latest remain: {left:?}");
    }
}
