//! The batch suite's stand-ins for other machines: the mock upstream on a runtime of its own,
//! and, when asked, the nodes and the mock at a lower CPU priority (`nice`), as nodes on GPU
//! boxes would be. Nothing here changes what the suite sends or times.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use testkit::mock::MockUpstream;

/// The mock upstream on its own threads, so that its requests never queue ahead of the
/// suite's timed client in one tokio scheduler; at `nice` when that is above 0.
pub struct MockHost {
    pub mock: MockUpstream,
    runtime: Option<tokio::runtime::Runtime>,
}

impl MockHost {
    pub async fn start(models: &'static [&'static str], nice: u8) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("obb-bench-mock")
            .enable_all()
            .on_thread_start(move || {
                if nice > 0 {
                    // Threads the runtime adds later start here too.
                    renice_thread(None, nice);
                }
            })
            .build()?;
        let mock = runtime
            .spawn(async move { MockUpstream::start(models).await })
            .await??;
        Ok(Self {
            mock,
            runtime: Some(runtime),
        })
    }
}

impl Drop for MockHost {
    fn drop(&mut self) {
        // Dropping a runtime from async code would panic; this does not wait. The mock's own
        // drop then aborts a task of a runtime already shut down, which is harmless.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets every thread of process `pid` to `nice`: `renice` on a pid moves only its first
/// thread. Threads it starts later inherit their parent thread's value.
pub fn renice_process(pid: u32, nice: u8) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        RENICE_FAILED.store(true, Ordering::Relaxed);
        return;
    };
    for task in tasks.flatten() {
        if let Ok(tid) = task.file_name().into_string() {
            renice_thread(Some(&tid), nice);
        }
    }
}

/// Whether any `renice` failed: the figures would then not be at the nice value they claim.
static RENICE_FAILED: AtomicBool = AtomicBool::new(false);

/// An error when any thread could not be set to its nice value, so that no figure is
/// labelled with a priority it did not run at.
pub fn check_reniced() -> anyhow::Result<()> {
    if RENICE_FAILED.load(Ordering::Relaxed) {
        anyhow::bail!(
            "`renice` failed for a node or mock thread (see stderr): --nodes-nice not applied"
        );
    }
    Ok(())
}

/// Sets thread `tid` (the calling thread when `None`) to `nice`. A failure is recorded for
/// [`check_reniced`], and `renice` says why on stderr.
fn renice_thread(tid: Option<&str>, nice: u8) {
    let own;
    let tid = match tid {
        Some(tid) => tid,
        None => {
            // `/proc/thread-self` links to `<pid>/task/<tid>`.
            own = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|link| link.file_name()?.to_str().map(str::to_owned));
            match &own {
                Some(tid) => tid,
                None => {
                    RENICE_FAILED.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    };
    let done = Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", tid])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !done {
        RENICE_FAILED.store(true, Ordering::Relaxed);
    }
}
