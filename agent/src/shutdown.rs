//! What a power-off request (the power button) does to disk work in progress.
//!
//! The ramdisk is disposable; the disks are not. Every operation that writes a disk
//! registers itself ([`Coordinator::begin`]) for as long as it runs, and says when it
//! reaches the point after which its result is complete on the disk
//! ([`DiskWork::finishing`]: a deploy whose image was verified and is being committed).
//! When the power button asks for a power-off, [`Coordinator::power_off`]:
//!
//! - lets *finishing* work end (a committed image is whole and verified; tearing it in the
//!   middle of its partition table would leave exactly the half-written disk we must not);
//! - names every disk whose work is still *destroying* it (an image streaming in, a
//!   metadata wipe, an erase), so the caller zeroes its first and last MiB
//!   ([`zero_ends`]): its partition tables are gone and it cannot boot, instead of an old
//!   table over half a new image;
//! - from then on holds any work that tries to start or to reach its finishing point, so
//!   nothing is written after the decision.
//!
//! Nothing is reported to the engine: the agent powers off, the engine sees it disconnect
//! and the operation as not done.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How much of each end of a disk is zeroed: every partition table (MBR, both GPT copies
/// and their entry arrays) and the boot code live there.
pub const END_BYTES: u64 = 1 << 20;

/// Where a disk operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Overwriting what was on the disk; stopped here, the disk holds neither the old
    /// contents nor the new.
    Destroying,
    /// Completing a result that is already whole and verified (writing the held-back
    /// first and last MiB, the GPT fix-up, the config drive).
    Finishing,
}

#[derive(Debug, Default)]
struct State {
    power_off_requested: bool,
    next_id: u64,
    works: Vec<(u64, PathBuf, Stage)>,
}

/// Keeps track of disk work for a power-off request. The process has one,
/// [`coordinator`]; tests make their own.
#[derive(Debug)]
pub struct Coordinator {
    state: Mutex<State>,
    changed: Condvar,
}

/// What a power-off must do before it cuts the power.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerOffPlan {
    /// Disks some work was destroying when the power-off was decided, each once.
    pub wipe: Vec<PathBuf>,
    /// Disks whose finishing work did not end within the time allowed.
    pub unfinished: Vec<PathBuf>,
}

static COORDINATOR: Coordinator = Coordinator::new();

/// The process's coordinator, which the agent's disk operations register with.
pub fn coordinator() -> &'static Coordinator {
    &COORDINATOR
}

impl Default for Coordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl Coordinator {
    /// A coordinator with no work and no request.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(State {
                power_off_requested: false,
                next_id: 0,
                works: Vec::new(),
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: every change is
        // one push, one removal or one assignment.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers work that is about to write `disk`; it ends when the guard is dropped.
    /// After a power-off was requested this never returns: the machine is going down and
    /// nothing new may touch a disk.
    pub fn begin(&self, disk: &Path) -> DiskWork<'_> {
        let mut state = self.lock();
        if state.power_off_requested {
            drop(state);
            hold_forever(disk);
        }
        state.next_id += 1;
        let id = state.next_id;
        state.works.push((id, disk.to_owned(), Stage::Destroying));
        DiskWork {
            coordinator: self,
            id,
        }
    }

    /// Whether a power-off was requested.
    pub fn power_off_requested(&self) -> bool {
        self.lock().power_off_requested
    }

    /// The disks some work is writing now, each once, with where that work is.
    pub fn busy_disks(&self) -> Vec<(PathBuf, Stage)> {
        let mut busy: Vec<(PathBuf, Stage)> = Vec::new();
        for (_, disk, stage) in &self.lock().works {
            if !busy.iter().any(|(seen, _)| seen == disk) {
                busy.push((disk.clone(), *stage));
            }
        }
        busy
    }

    /// Decides a power-off: from now on no work starts or finishes; work already
    /// finishing may end (waiting at most `finishing_limit`); the disks of work that is
    /// destroying them are returned to be wiped.
    pub fn power_off(&self, finishing_limit: Duration) -> PowerOffPlan {
        let deadline = Instant::now() + finishing_limit;
        let mut state = self.lock();
        state.power_off_requested = true;
        let finishing = |state: &State| {
            state
                .works
                .iter()
                .any(|(_, _, stage)| *stage == Stage::Finishing)
        };
        while finishing(&state) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .map(|(state, _)| state)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
        let mut plan = PowerOffPlan {
            wipe: Vec::new(),
            unfinished: Vec::new(),
        };
        for (_, disk, stage) in &state.works {
            let list = match stage {
                Stage::Destroying => &mut plan.wipe,
                Stage::Finishing => &mut plan.unfinished,
            };
            if !list.contains(disk) {
                list.push(disk.clone());
            }
        }
        // A disk also being finished is left alone: its image is whole.
        plan.wipe.retain(|disk| !plan.unfinished.contains(disk));
        plan
    }
}

/// Disk work in progress; dropping it ends it.
#[derive(Debug)]
pub struct DiskWork<'a> {
    coordinator: &'a Coordinator,
    id: u64,
}

impl DiskWork<'_> {
    /// Says the result is now whole and only being completed. If a power-off was already
    /// decided, this never returns: the disk is being wiped and the power cut, and
    /// completing the result now would race with the wipe.
    pub fn finishing(&self) {
        let mut state = self.coordinator.lock();
        if state.power_off_requested {
            let disk = state
                .works
                .iter()
                .find(|(id, _, _)| *id == self.id)
                .map(|(_, disk, _)| disk.clone())
                .unwrap_or_default();
            drop(state);
            hold_forever(&disk);
        }
        if let Some(work) = state.works.iter_mut().find(|(id, _, _)| *id == self.id) {
            work.2 = Stage::Finishing;
        }
    }
}

impl Drop for DiskWork<'_> {
    fn drop(&mut self) {
        self.coordinator
            .lock()
            .works
            .retain(|(id, _, _)| *id != self.id);
        self.coordinator.changed.notify_all();
    }
}

fn hold_forever(disk: &Path) -> ! {
    tracing::info!(disk = %disk.display(), "powering off: this disk operation stops here");
    loop {
        std::thread::park();
    }
}

/// Zeroes the first and last [`END_BYTES`] of `disk` (a block device or a file) and
/// flushes them to stable storage. The device is opened without `O_EXCL`, so this works
/// while the interrupted operation still holds it.
pub fn zero_ends(disk: &Path) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(disk)?;
    let size = file.seek(SeekFrom::End(0))?;
    let head = END_BYTES.min(size);
    file.write_all_at(&vec![0u8; head as usize], 0)?;
    // The far end from a 4 KiB boundary (a 4Kn disk's sector), never before the head.
    let tail = (size.saturating_sub(END_BYTES) & !4095).max(head);
    file.write_all_at(&vec![0u8; (size - tail) as usize], tail)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn with_nothing_running_a_power_off_wipes_nothing() {
        let coordinator = Coordinator::new();
        drop(coordinator.begin(Path::new("/dev/vda")));
        let plan = coordinator.power_off(LONG);
        assert!(plan.wipe.is_empty() && plan.unfinished.is_empty());
        assert!(coordinator.power_off_requested());
    }

    #[test]
    fn disks_being_destroyed_are_wiped_once_each() {
        let coordinator = Coordinator::new();
        // A deploy that cleans first registers its disk twice.
        let _deploy = coordinator.begin(Path::new("/dev/vda"));
        let _clean = coordinator.begin(Path::new("/dev/vda"));
        let _erase = coordinator.begin(Path::new("/dev/nvme0n1"));
        let plan = coordinator.power_off(LONG);
        assert_eq!(
            plan.wipe,
            [PathBuf::from("/dev/vda"), PathBuf::from("/dev/nvme0n1")]
        );
    }

    #[test]
    fn finishing_work_ends_before_the_power_off_goes_on() {
        let coordinator = Arc::new(Coordinator::new());
        let finished = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker = std::thread::spawn({
            let (coordinator, finished) = (coordinator.clone(), finished.clone());
            move || {
                let work = coordinator.begin(Path::new("/dev/vda"));
                work.finishing();
                ready_tx.send(()).unwrap();
                // Still completing the image while the button is pressed.
                std::thread::sleep(Duration::from_millis(300));
                finished.store(true, Ordering::SeqCst);
            }
        });
        ready_rx.recv().unwrap();
        let plan = coordinator.power_off(LONG);
        assert!(
            finished.load(Ordering::SeqCst),
            "the power-off did not wait"
        );
        assert!(
            plan.wipe.is_empty() && plan.unfinished.is_empty(),
            "{plan:?}"
        );
        worker.join().unwrap();
    }

    #[test]
    fn finishing_work_that_hangs_is_reported_not_waited_for_forever() {
        let coordinator = Coordinator::new();
        let work = coordinator.begin(Path::new("/dev/sda"));
        work.finishing();
        let plan = coordinator.power_off(Duration::from_millis(50));
        assert_eq!(plan.unfinished, [PathBuf::from("/dev/sda")]);
        assert!(plan.wipe.is_empty());
    }

    #[test]
    fn after_the_decision_no_work_starts_or_reaches_its_finishing_point() {
        // Static, so the work can move to threads that never end: they stay parked until
        // the test process exits under them.
        static COORDINATOR: Coordinator = Coordinator::new();
        let streaming = COORDINATOR.begin(Path::new("/dev/vda"));
        let plan = COORDINATOR.power_off(LONG);
        assert_eq!(plan.wipe, [PathBuf::from("/dev/vda")]);
        let passed = Arc::new(AtomicBool::new(false));
        let starting = std::thread::spawn({
            let passed = passed.clone();
            move || {
                let _work = COORDINATOR.begin(Path::new("/dev/vdb"));
                passed.store(true, Ordering::SeqCst);
            }
        });
        let finishing = std::thread::spawn({
            let passed = passed.clone();
            move || {
                streaming.finishing();
                passed.store(true, Ordering::SeqCst);
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!starting.is_finished() && !finishing.is_finished());
        assert!(!passed.load(Ordering::SeqCst));
    }

    #[test]
    fn zero_ends_clears_both_ends_and_keeps_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        for size in [3 * END_BYTES + 12_345, END_BYTES + 512, 4096, 0] {
            let path = dir.path().join(format!("disk-{size}"));
            std::fs::write(&path, vec![0xee; size as usize]).unwrap();
            zero_ends(&path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len() as u64, size, "the size is kept");
            let head = END_BYTES.min(size) as usize;
            assert!(bytes[..head].iter().all(|&b| b == 0), "head of {size}");
            let tail = (size.saturating_sub(END_BYTES) & !4095).max(head as u64) as usize;
            assert!(bytes[tail..].iter().all(|&b| b == 0), "tail of {size}");
            assert!(
                bytes[head..tail].iter().all(|&b| b == 0xee),
                "middle of {size}"
            );
            if size > 2 * END_BYTES + 4096 {
                assert!(tail - head > END_BYTES as usize);
            }
        }
    }
}
