//! Where a test's processes write their logs, and making sure a failing test says so.
//!
//! Every test gets `target/test-logs/<test binary>/<test name>/`. Node, Redis and
//! agent logs all go there, so a failure can be debugged after the fact. The
//! directory is emptied the first time a test asks for it in a process, so a
//! re-run never mixes old and new lines.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once, OnceLock};

use anyhow::{Context as _, Result};

/// The cargo target directory, derived from the running test executable
/// (`<target>/<profile>/deps/<test>-<hash>`).
///
/// # Panics
/// If the executable path is not inside a cargo target directory.
pub fn target_dir() -> PathBuf {
    profile_dir()
        .parent()
        .expect("profile dir has a parent (the target dir)")
        .to_path_buf()
}

/// `<target>/<profile>`: where cargo puts the workspace binaries such as `ioscale-node`.
///
/// # Panics
/// If the executable path is not inside a cargo target directory.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test exe has a parent dir");
    // Test executables live in `<profile>/deps`; be lenient for anything run
    // straight from `<profile>`.
    if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The workspace root (this package lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace root")
        .to_path_buf()
}

/// Name of the running test binary without cargo's hash suffix (`broadcast-0a1b…` → `broadcast`).
fn binary_name() -> String {
    let exe = std::env::current_exe().expect("current_exe");
    let stem = exe
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => stem,
    }
}

/// The current test's name. libtest (used by both `cargo test` and nextest) runs
/// each test on a thread named after it, and `#[tokio::test]` keeps the test
/// body on that thread, so this works anywhere in the test's own future.
pub fn current_test_name() -> String {
    let name = std::thread::current()
        .name()
        .map(str::to_owned)
        .filter(|n| n != "main" && !n.starts_with("tokio-runtime"))
        .unwrap_or_else(|| format!("unnamed-{}", std::process::id()));
    name.replace("::", ".")
}

/// Directories registered by live tests, printed by the panic hook.
fn live_dirs() -> &'static Mutex<Vec<PathBuf>> {
    static DIRS: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Appends "logs are in …" to every panic message. nextest runs one test per
/// process, so the list normally holds exactly this test's directory.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            let dirs = live_dirs().lock().unwrap_or_else(|e| e.into_inner());
            for d in dirs.iter() {
                eprintln!("note: process logs for this test are in {}", d.display());
            }
        }));
    });
}

/// A test's log directory. Keep it alive for the whole test: while it lives,
/// panics mention it, and dropping it prints its location once more (libtest
/// only shows that output for failing tests).
#[derive(Debug)]
pub struct TestLogs {
    dir: PathBuf,
}

impl TestLogs {
    /// The log directory of the current test, created (and emptied on first use).
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn for_current_test() -> Result<Self> {
        Self::named(&current_test_name())
    }

    /// A log directory with an explicit test name.
    ///
    /// # Errors
    /// If the directory cannot be created.
    pub fn named(test: &str) -> Result<Self> {
        static CLEARED: OnceLock<Mutex<HashSet<PathBuf>>> = OnceLock::new();
        let dir = target_dir()
            .join("test-logs")
            .join(binary_name())
            .join(test);
        let fresh = CLEARED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.clone());
        if fresh && dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("clearing old logs in {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        install_panic_hook();
        live_dirs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(dir.clone());
        Ok(Self { dir })
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Clone for TestLogs {
    fn clone(&self) -> Self {
        live_dirs()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.dir.clone());
        Self {
            dir: self.dir.clone(),
        }
    }
}

impl Drop for TestLogs {
    fn drop(&mut self) {
        let mut dirs = live_dirs().lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = dirs.iter().position(|d| d == &self.dir) {
            dirs.remove(i);
        }
        // Only the last handle reports, so the line appears once per test.
        if !dirs.contains(&self.dir) {
            eprintln!("process logs for this test: {}", self.dir.display());
        }
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
