//! Guest runs: boot a kernel with virtme-ng, run one command, and say what happened.
//!
//! vng is started in a process group of its own; whatever the outcome (exit, panic, hang, Ctrl-C)
//! the group is killed before `run` returns, so no QEMU outlives the lab. The kernel console (vng
//! `--verbose` sends it to stderr) is kept in a log and read for panics and oopses.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::process;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub accel: Accel,
    pub memory: String,
    pub cpus: u32,
    pub timeout: Duration,
    /// Also hung when neither the console nor the command printed anything for this long: a suite
    /// prints a line per case, so a stuck case is found in minutes however long the whole run is.
    pub silence: Option<Duration>,
    /// Echo the kernel console live (it is always logged).
    pub show_console: bool,
    /// Host directories the guest may write to (vng mounts the rest of the host read-only).
    pub rwdirs: Vec<PathBuf>,
    pub cwd: Option<PathBuf>,
    /// Where the console log goes.
    pub console_log: PathBuf,
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Outcome {
    /// The command ran and exited with this code; the kernel stayed healthy.
    Exited { code: i32 },
    /// The kernel panicked (QEMU exits on panic: vng passes `panic=-1` and `-no-reboot`).
    Panicked { line: String },
    /// The kernel oopsed or hit a BUG but kept going; `code` is what the command returned.
    Oopsed { line: String, code: i32 },
    /// Nothing ended the run before the timeout; the VM was killed.
    Hung {
        after_secs: u64,
        hint: Option<String>,
        /// Killed for printing nothing for this long (`VmConfig::silence`), not for the total timeout.
        #[serde(skip_serializing_if = "Option::is_none")]
        silent_secs: Option<u64>,
    },
    /// vng or QEMU failed before the guest ran anything.
    VmFailed { code: i32 },
}

impl Outcome {
    /// How a guest run ended, in words for a verdict ("hung: no output for 300s, ...").
    pub fn describe(&self) -> String {
        match self {
            Outcome::Exited { code } => format!("exited {code} before running a case"),
            Outcome::Panicked { line } => format!("panicked: {line}"),
            Outcome::Oopsed { line, .. } => format!("oopsed: {line}"),
            Outcome::Hung { after_secs, silent_secs, .. } => format!("hung: {}", hang_reason(*after_secs, *silent_secs)),
            Outcome::VmFailed { code } => format!("VM did not start (vng exited {code})"),
        }
    }
}

/// Why a hung guest was killed, for messages: "no exit within 900s" or "no output for 300s (...)".
pub fn hang_reason(after_secs: u64, silent_secs: Option<u64>) -> String {
    match silent_secs {
        None => format!("no exit within {after_secs}s"),
        Some(quiet) => format!("no output for {quiet}s, {after_secs}s into the run"),
    }
}

#[derive(Debug, Clone)]
pub struct GuestRun {
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub console: String,
    pub wall: Duration,
}

impl GuestRun {
    pub fn console_tail(&self, n: usize) -> String {
        process::tail(&self.console, n)
    }
}

/// Lines that mean the kernel is in trouble, most severe first.
fn first_line_with(console: &str, needles: &[&str]) -> Option<String> {
    console.lines().find(|l| needles.iter().any(|n| l.contains(n))).map(|l| l.trim().to_string())
}

/// Decide the outcome from the exit status and the console.
pub fn classify(code: Option<i32>, killed: Option<Killed>, console: &str, command_started: bool) -> Outcome {
    if let Some(line) = first_line_with(console, &["Kernel panic - not syncing"]) {
        return Outcome::Panicked { line };
    }
    if let Some(killed) = killed {
        let hint = first_line_with(console, &["soft lockup", "hung_task", "blocked for more than", "rcu_sched self-detected stall", "RCU stall"]);
        let silent_secs = match killed {
            Killed::Timeout(_) => None,
            Killed::Silent { quiet, .. } => Some(quiet.as_secs()),
        };
        return Outcome::Hung { after_secs: killed.after().as_secs(), hint, silent_secs };
    }
    let code = code.unwrap_or(-1);
    if let Some(line) = first_line_with(console, &["Oops:", "BUG:", "general protection fault", "kernel BUG at"]) {
        return Outcome::Oopsed { line, code };
    }
    if !command_started && code != 0 {
        return Outcome::VmFailed { code };
    }
    Outcome::Exited { code }
}

/// Why the lab killed a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Killed {
    /// It was still running at the timeout.
    Timeout(Duration),
    /// It printed nothing for `quiet`, `after` into the run.
    Silent { quiet: Duration, after: Duration },
}

impl Killed {
    pub fn after(self) -> Duration {
        match self {
            Killed::Timeout(t) => t,
            Killed::Silent { after, .. } => after,
        }
    }
}

/// Build the vng command line.
/// Where pip put its scripts for the interpreter `python3` runs (off PATH under pyenv and for
/// `pip install --user`): `make deps` installs vng there.
fn pip_scripts_dirs() -> Vec<PathBuf> {
    let query = "import sysconfig; print(sysconfig.get_path('scripts')); print(sysconfig.get_path('scripts', 'posix_user'))";
    process::output("python3", &["-c", query]).map(|out| out.lines().map(PathBuf::from).collect()).unwrap_or_default()
}

/// Where `make deps` writes the path of the vng it installed: a shell without pip's scripts folder
/// on PATH (cron, CI, `env -i`, another interpreter first on PATH) still finds that one.
pub const VNG_RECORD: &str = "vng-path";

fn recorded_vng() -> (PathBuf, Option<PathBuf>) {
    let record = crate::cache::Cache::default_root().join(VNG_RECORD);
    let vng = std::fs::read_to_string(&record).ok().map(|s| PathBuf::from(s.trim()));
    (record, vng)
}

/// vng from PATH, else where `make deps` recorded it, else from pip's scripts folders; `Err` names
/// every place looked in.
pub fn find_vng() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).map(|d| d.join("vng")).find(|p| p.is_file());
    let (record, recorded) = recorded_vng();
    let scripts = pip_scripts_dirs();
    let in_scripts = scripts.iter().map(|d| d.join("vng")).find(|p| p.is_file());
    on_path.or(recorded.filter(|p| p.is_file())).or(in_scripts).ok_or_else(|| {
        let looked: Vec<String> = scripts.iter().map(|d| d.display().to_string()).collect();
        format!(
            "vng is not on PATH, nor where `make deps` recorded it ({}), nor in pip's scripts folder ({}); `make deps` installs virtme-ng",
            record.display(),
            looked.join(", ")
        )
    })
}

pub fn vng_command(kimg: &Path, script: &str, cfg: &VmConfig) -> Command {
    static VNG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let vng = VNG.get_or_init(|| find_vng().unwrap_or_else(|_| PathBuf::from("vng")));
    let mut cmd = Command::new(vng);
    // vng runs its siblings (virtme-run) by name: its folder goes first on their PATH too.
    if let Some(dir) = vng.parent().filter(|d| !d.as_os_str().is_empty()) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let dirs = std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(dirs) {
            cmd.env("PATH", joined);
        }
    }
    cmd.arg("--run").arg(kimg);
    cmd.args(["--memory", &cfg.memory, "--cpus", &cfg.cpus.to_string(), "--verbose"]);
    // QEMU's -name carries lab's pid, so "is any VM of this lab process left?" has an exact answer.
    cmd.arg("--name").arg(format!("sockmap-lab-{}", std::process::id()));
    if cfg.accel == Accel::Tcg {
        cmd.arg("--disable-kvm");
    }
    for dir in &cfg.rwdirs {
        cmd.arg(format!("--rwdir={}", dir.display()));
    }
    if let Some(cwd) = &cfg.cwd {
        cmd.arg(format!("--cwd={}", cwd.display()));
    }
    cmd.arg("--exec").arg(script);
    cmd
}

/// Marker the guest prints before the command, so the lab can tell "the VM never came up" from
/// "the command failed".
const STARTED: &str = "sockmap-lab: guest command starting";

/// What `--exec` gets: `sh FILE`, the script written beside the console log. virtme-ng hands `--exec`
/// to the guest on the kernel command line, which the kernel cuts at 2048 bytes (x86
/// COMMAND_LINE_SIZE) together with what follows it, `init=` included: a suite's script with a long
/// kernel name and run folder made the guest panic with "Requested init ... failed". The guest reads
/// the file through its read-only view of the host.
fn exec_line(script: &str, console_log: &Path) -> anyhow::Result<String> {
    let file = console_log.with_extension("sh");
    std::fs::write(&file, script).with_context(|| format!("writing the guest script {}", file.display()))?;
    Ok(format!("sh {}", shell_words::quote(&file.display().to_string())))
}

/// For `run`'s `on_stdout`: the guest's output comes in pieces; `on_line` gets it a whole line at a time.
pub fn by_line(mut on_line: impl FnMut(&str) + Send) -> impl FnMut(&[u8]) + Send {
    let mut pending = String::new();
    move |bytes| {
        pending.push_str(&String::from_utf8_lossy(bytes));
        while let Some(nl) = pending.find('\n') {
            let line: String = pending.drain(..=nl).collect();
            on_line(&line);
        }
    }
}

/// Boot `kimg` and run `command` (argv) in it. `on_stdout` receives the command's output live
/// (stdout and stderr merged, because vng's stderr carries the kernel console).
pub fn run(kimg: &Path, command: &[String], cfg: &VmConfig, mut on_stdout: impl FnMut(&[u8]) + Send) -> anyhow::Result<GuestRun> {
    anyhow::ensure!(kimg.is_file(), "kernel image {} does not exist", kimg.display());
    let script = format!("echo '{STARTED}' >&2; {{ {} ; }} 2>&1", shell_words::join(command));
    let mut cmd = vng_command(kimg, &exec_line(&script, &cfg.console_log)?, cfg);
    process::in_own_group(&mut cmd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| match find_vng() {
        Ok(vng) => format!("cannot start {}", vng.display()),
        Err(why) => format!("cannot start vng: {why}"),
    })?;
    let pgid = child.id() as i32;
    process::register(pgid);

    let console = Arc::new(Mutex::new(String::new()));
    // Milliseconds since `started` of the last output from the guest, on either stream.
    let last_output = Arc::new(AtomicU64::new(0));
    let log = std::fs::File::create(&cfg.console_log)
        .with_context(|| format!("cannot create console log {}", cfg.console_log.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let console_reader = read_console(stderr, log, Arc::clone(&console), Arc::clone(&last_output), started, cfg.show_console);
    let mut stdout = child.stdout.take().expect("piped");
    let mut captured = Vec::new();

    let (code, killed) = std::thread::scope(|s| {
        let last = &last_output;
        let captured = &mut captured;
        s.spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                heard(last, started);
                on_stdout(&buf[..n]);
                captured.extend_from_slice(&buf[..n]);
            }
        });
        let result = wait_or_kill(&mut child, pgid, cfg, started, &last_output);
        // vng may have left QEMU (or a helper) behind; the group goes either way, which also
        // closes the pipes the reader threads are blocked on.
        process::kill_group(pgid);
        result
    });
    process::unregister(pgid);
    let _ = console_reader.join();
    let console = console.lock().unwrap().clone();
    let outcome = classify(code, killed, &console, console.contains(STARTED));
    Ok(GuestRun { outcome, stdout: captured, console, wall: started.elapsed() })
}

/// The guest said something: when, in milliseconds since `started`, for the silence limit.
fn heard(last: &AtomicU64, started: Instant) {
    last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// vng's stderr, the kernel console: into the log, the run's copy, and the terminal when shown.
fn read_console(stderr: ChildStderr, mut log: std::fs::File, console: Arc<Mutex<String>>, last_output: Arc<AtomicU64>, started: Instant, show: bool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut raw = Vec::new();
        while reader.read_until(b'\n', &mut raw).map(|n| n > 0).unwrap_or(false) {
            heard(&last_output, started);
            let _ = log.write_all(&raw);
            let line = String::from_utf8_lossy(&raw);
            if show {
                eprint!("{line}");
            }
            console.lock().unwrap().push_str(&line);
            raw.clear();
        }
    })
}

/// Wait for vng to exit, killing its group past the timeout or the silence limit: the exit code,
/// or why it was killed.
fn wait_or_kill(child: &mut Child, pgid: i32, cfg: &VmConfig, started: Instant, last_output: &AtomicU64) -> (Option<i32>, Option<Killed>) {
    loop {
        let now = started.elapsed();
        let quiet = now.saturating_sub(Duration::from_millis(last_output.load(Ordering::Relaxed)));
        let killed = if now >= cfg.timeout {
            Some(Killed::Timeout(cfg.timeout))
        } else {
            cfg.silence.filter(|limit| quiet >= *limit).map(|_| Killed::Silent { quiet, after: now })
        };
        match child.try_wait() {
            Ok(Some(status)) => return (status.code(), None),
            Ok(None) if killed.is_some() => {
                process::kill_group(pgid);
                let _ = child.wait();
                return (None, killed);
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => {
                process::kill_group(pgid);
                return (None, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn output_in_pieces_reaches_the_callback_as_whole_lines() {
        let mut lines = Vec::new();
        let mut feed = by_line(|l| lines.push(l.to_string()));
        for piece in ["te", "st a ... ok\ntest b", " ... ", "ok\n", "half"] {
            feed(piece.as_bytes());
        }
        drop(feed);
        assert_eq!(lines, ["test a ... ok\n", "test b ... ok\n"], "an unfinished line waits for its newline");
    }

    #[test]
    fn a_clean_exit_passes_the_code_through() {
        assert_eq!(classify(Some(3), None, "[ 1.0] booting\nsockmap-lab: guest command starting\n", true), Outcome::Exited { code: 3 });
    }

    #[test]
    fn a_panic_wins_over_everything() {
        let console = "[ 2.1] sysrq: Trigger a crash\n[ 2.1] Kernel panic - not syncing: sysrq triggered crash\n";
        assert!(matches!(classify(Some(0), None, console, true), Outcome::Panicked { line } if line.contains("sysrq triggered crash")));
        assert!(matches!(classify(None, Some(Killed::Timeout(T)), console, true), Outcome::Panicked { .. }));
    }

    #[test]
    fn a_timeout_is_a_hang_with_a_hint() {
        let console = "[ 30.0] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]\n";
        match classify(None, Some(Killed::Timeout(T)), console, true) {
            Outcome::Hung { after_secs, hint, silent_secs } => {
                assert_eq!(after_secs, 60);
                assert!(hint.unwrap().contains("soft lockup"));
                assert_eq!(silent_secs, None);
            }
            other => panic!("{other:?}"),
        }
        let quiet = Killed::Silent { quiet: Duration::from_secs(300), after: Duration::from_secs(1234) };
        assert_eq!(classify(None, Some(quiet), "", true), Outcome::Hung { after_secs: 1234, hint: None, silent_secs: Some(300) });
    }

    #[test]
    fn an_oops_is_reported_even_if_the_command_succeeded() {
        let console = "[ 3.0] BUG: kernel NULL pointer dereference, address: 0000000000000000\n[ 3.0] Oops: 0000 [#1] SMP\n";
        assert!(matches!(classify(Some(0), None, console, true), Outcome::Oopsed { code: 0, .. }));
    }

    #[test]
    fn failing_before_the_command_is_a_vm_failure() {
        assert_eq!(classify(Some(255), None, "qemu: could not load kernel\n", false), Outcome::VmFailed { code: 255 });
    }

    #[test]
    fn the_kernel_command_line_only_names_the_script_however_long_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console-k-1-2.log");
        let script = "export X=".to_string() + &"y".repeat(4096);
        let line = exec_line(&script, &log).unwrap();
        assert_eq!(line, format!("sh {}", dir.path().join("console-k-1-2.sh").display()));
        assert_eq!(std::fs::read_to_string(dir.path().join("console-k-1-2.sh")).unwrap(), script);
    }

    #[test]
    fn the_vng_command_line_reflects_the_config() {
        let cfg = VmConfig {
            accel: Accel::Tcg,
            memory: "2G".into(),
            cpus: 2,
            timeout: T,
            silence: None,
            show_console: false,
            rwdirs: vec!["/tmp/out".into()],
            cwd: None,
            console_log: "/tmp/c.log".into(),
        };
        let cmd = vng_command(Path::new("/k/bzImage"), "uname -r", &cfg);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(args.contains(&"--disable-kvm".to_string()));
        assert!(args.contains(&"--rwdir=/tmp/out".to_string()));
        assert_eq!(args.last().unwrap(), "uname -r");
        let kvm = VmConfig { accel: Accel::Kvm, ..cfg };
        let args: Vec<_> = vng_command(Path::new("/k/bzImage"), "x", &kvm).get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert!(!args.contains(&"--disable-kvm".to_string()));
    }
}
