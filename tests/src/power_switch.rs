//! The machine behind a simulated BMC: QEMU guests that ipmi_sim's power state starts and
//! stops, so an engine's IPMI `chassis power on` really boots a VM.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::qemu::{Guest, tail};

/// One power-on: the boot device the BMC held at that moment and the guest's console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerOn {
    /// `pxe`, `default`, `none`, … as ipmi_sim's chassis_control holds it.
    pub boot_device: String,
    pub serial_log: PathBuf,
}

/// Follows the chassis-control log of an [`crate::IpmiSim`] state directory (every 100 ms,
/// every `set` in order): `power 1` starts the n-th guest (0-based) with
/// `start(n, boot_device)`, `power 0` kills it (a hard power-off), `shutdown 1` (a soft
/// power-off) presses its ACPI power button when it has QMP. A guest that exits by itself (it powered off,
/// or rebooted under `-no-reboot`) turns the power off, as a real machine's BMC would see.
/// Stops watching and kills the guest on drop.
pub struct PowerSwitch {
    stop: Arc<AtomicBool>,
    power_ons: Arc<Mutex<Vec<PowerOn>>>,
    watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PowerSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PowerSwitch")
            .field("power_ons", &self.power_ons())
            .finish_non_exhaustive()
    }
}

impl PowerSwitch {
    pub fn attach(
        state_dir: &Path,
        mut start: impl FnMut(usize, &str) -> Guest + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let power_ons = Arc::new(Mutex::new(Vec::new()));
        let dir = state_dir.to_owned();
        let watcher = std::thread::spawn({
            let (stop, power_ons) = (stop.clone(), power_ons.clone());
            move || {
                let mut guest: Option<Guest> = None;
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    // Every `set` in order: a power cycle faster than one poll still restarts
                    // the guest.
                    let log = std::fs::read_to_string(dir.join("control.log")).unwrap_or_default();
                    let lines: Vec<&str> = log.lines().collect();
                    for line in &lines[seen.min(lines.len())..] {
                        match *line {
                            "power 0" => guest = None,
                            // ipmi_sim's soft power-off: the ACPI power button.
                            "shutdown 1" => {
                                if let Some(running) = guest.as_mut() {
                                    running.press_power_button();
                                }
                            }
                            "power 1" if guest.is_none() => {
                                let boot_device = read(&dir, "boot");
                                let mut all = power_ons.lock().unwrap();
                                let started = start(all.len(), &boot_device);
                                all.push(PowerOn {
                                    boot_device,
                                    serial_log: started.serial_log().to_owned(),
                                });
                                guest = Some(started);
                            }
                            _ => {}
                        }
                    }
                    seen = lines.len();
                    if guest.as_mut().is_some_and(Guest::has_exited) {
                        guest = None;
                        let new = dir.join("power.new");
                        std::fs::write(&new, "0\n").unwrap();
                        std::fs::rename(&new, dir.join("power")).unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
        Self {
            stop,
            power_ons,
            watcher: Some(watcher),
        }
    }

    /// Every power-on so far, in order.
    pub fn power_ons(&self) -> Vec<PowerOn> {
        self.power_ons.lock().unwrap().clone()
    }

    /// The console of the n-th power-on so far (empty before it happened).
    pub fn serial(&self, n: usize) -> String {
        self.power_ons()
            .get(n)
            .and_then(|on| std::fs::read(&on.serial_log).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Waits until the n-th power-on's console shows `marker`; fails with the console's end.
    pub fn wait_for_serial(&self, n: usize, marker: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let serial = self.serial(n);
            if serial.contains(marker) {
                return serial;
            }
            assert!(
                Instant::now() < deadline,
                "power-on {n} did not print {marker:?} within {timeout:?} (power-ons: {:?}); \
                 its console ended with:\n{}",
                self.power_ons(),
                tail(&serial, 40)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PowerSwitch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(watcher) = self.watcher.take() {
            let _ = watcher.join();
        }
    }
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_default()
        .trim()
        .to_owned()
}
