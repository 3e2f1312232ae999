//! The ACPI power button, as the kernel's input layer presents it: which event devices are
//! power buttons (from sysfs), and the `struct input_event` records read from them.
//!
//! The kernel's ACPI `button` driver registers one input device per button, named
//! "Power Button" (the fixed-feature button `LNXPWRBN` and the control-method one
//! `PNP0C0C` alike); `evdev` exposes each as `/dev/input/eventN`. A BMC's soft power-off
//! (IPMI chassis soft-off, Redfish `GracefulShutdown`) reaches the host as a press of that
//! button. The decoding here is sans-IO: bytes in, events out.

use std::ffi::c_long;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;

use crate::sysfs::SysRoot;

/// The name the ACPI button driver gives its power-button input devices.
pub const POWER_BUTTON_NAME: &str = "Power Button";

/// `EV_KEY` from `<linux/input-event-codes.h>`.
pub const EV_KEY: u16 = 0x01;
/// `KEY_POWER` from `<linux/input-event-codes.h>`.
pub const KEY_POWER: u16 = 116;

/// The size of one `struct input_event`: a `struct timeval` (two `long`s, as the kernel
/// lays it out for this architecture's user space), then `__u16 type`, `__u16 code` and
/// `__s32 value`, in native byte order.
pub const EVENT_BYTES: usize = TIME_BYTES + 8;
const TIME_BYTES: usize = 2 * std::mem::size_of::<c_long>();

/// One input event, without its timestamp (nothing here needs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    /// `type`: `EV_KEY`, `EV_SYN`, …
    pub kind: u16,
    /// `code`: the key for `EV_KEY`.
    pub code: u16,
    /// `value`: for keys 1 pressed, 0 released, 2 auto-repeat.
    pub value: i32,
}

impl InputEvent {
    /// Decodes one record of exactly [`EVENT_BYTES`].
    pub fn from_record(record: &[u8; EVENT_BYTES]) -> Self {
        let field = |at: usize| [record[at], record[at + 1]];
        let value = [
            record[TIME_BYTES + 4],
            record[TIME_BYTES + 5],
            record[TIME_BYTES + 6],
            record[TIME_BYTES + 7],
        ];
        Self {
            kind: u16::from_ne_bytes(field(TIME_BYTES)),
            code: u16::from_ne_bytes(field(TIME_BYTES + 2)),
            value: i32::from_ne_bytes(value),
        }
    }

    /// The power key going down. Releases and auto-repeats are not presses: one press of
    /// the button is one request.
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// Turns the bytes read from an event device into events. `evdev` returns whole records
/// from every `read`, but the decoder does not rely on it: a partial record waits for the
/// rest.
#[derive(Debug, Default)]
pub struct EventDecoder {
    partial: Vec<u8>,
}

impl EventDecoder {
    /// The events completed by `bytes`, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<InputEvent> {
        self.partial.extend_from_slice(bytes);
        let whole = self.partial.len() / EVENT_BYTES * EVENT_BYTES;
        let events = self.partial[..whole]
            .chunks_exact(EVENT_BYTES)
            .filter_map(|chunk| <&[u8; EVENT_BYTES]>::try_from(chunk).ok())
            .map(InputEvent::from_record)
            .collect();
        self.partial.drain(..whole);
        events
    }
}

/// An input device that is a power button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerButton {
    /// The event handler's name, `event0`.
    pub event: String,
    /// Its character device, `/dev/input/event0` (devtmpfs names it so).
    pub device: PathBuf,
}

/// The power buttons among the event devices in `/sys/class/input`, in name order. Empty
/// when the machine has none or `evdev` is not loaded (then there is nothing to read).
pub fn find_power_buttons(sys: &SysRoot) -> Vec<PowerButton> {
    sys.list("/sys/class/input")
        .into_iter()
        .filter(|name| name.starts_with("event"))
        .filter(|event| {
            sys.read_trimmed(&format!("/sys/class/input/{event}/device/name"))
                .is_some_and(|name| name == POWER_BUTTON_NAME)
        })
        .map(|event| PowerButton {
            device: PathBuf::from("/dev/input").join(&event),
            event,
        })
        .collect()
}

/// Called with the button that was pressed.
pub type OnPress = Arc<dyn Fn(&PowerButton) + Send + Sync>;

/// Reads each button's events on a thread of its own and calls `on_press` for every press.
/// A device that cannot be opened is reported in the result and not watched; one that
/// fails later (unplugged) ends its thread with a warning.
pub fn watch(buttons: &[PowerButton], on_press: &OnPress) -> Vec<(PowerButton, std::io::Error)> {
    let mut failed = Vec::new();
    for button in buttons {
        match std::fs::File::open(&button.device) {
            Ok(device) => {
                let (button, on_press) = (button.clone(), Arc::clone(on_press));
                std::thread::spawn(move || read_presses(device, &button, &on_press));
            }
            Err(err) => failed.push((button.clone(), err)),
        }
    }
    failed
}

fn read_presses(mut device: std::fs::File, button: &PowerButton, on_press: &OnPress) {
    let mut decoder = EventDecoder::default();
    let mut buffer = [0u8; 64 * EVENT_BYTES];
    loop {
        match device.read(&mut buffer) {
            Ok(0) => return,
            Ok(read) => {
                for event in decoder.feed(&buffer[..read]) {
                    if event.is_power_press() {
                        on_press(button);
                    }
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::warn!(device = %button.device.display(), error = %err,
                    "stopped reading the power button");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(kind: u16, code: u16, value: i32) -> Vec<u8> {
        let mut bytes = vec![0xa5; TIME_BYTES];
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.extend_from_slice(&value.to_ne_bytes());
        bytes
    }

    /// What the ACPI button driver reports for one press: key down, sync, key up, sync.
    fn one_press() -> Vec<u8> {
        [
            record(EV_KEY, KEY_POWER, 1),
            record(0, 0, 0),
            record(EV_KEY, KEY_POWER, 0),
            record(0, 0, 0),
        ]
        .concat()
    }

    #[test]
    fn a_record_is_as_large_as_the_kernels_struct() {
        // x86_64 and aarch64: a 16-byte timeval; 32-bit targets: 8 bytes.
        assert_eq!(
            EVENT_BYTES,
            if cfg!(target_pointer_width = "64") {
                24
            } else {
                16
            }
        );
    }

    #[test]
    fn decodes_a_press_and_its_release() {
        let events = EventDecoder::default().feed(&one_press());
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0],
            InputEvent {
                kind: EV_KEY,
                code: KEY_POWER,
                value: 1
            }
        );
        let presses: Vec<bool> = events.iter().map(InputEvent::is_power_press).collect();
        assert_eq!(presses, [true, false, false, false]);
    }

    #[test]
    fn only_the_power_key_going_down_is_a_press() {
        let not_presses = [
            record(EV_KEY, KEY_POWER, 0),      // released
            record(EV_KEY, KEY_POWER, 2),      // auto-repeat
            record(EV_KEY, 142, 1),            // KEY_SLEEP
            record(0x05, KEY_POWER, 1),        // EV_SW with the same code
            record(EV_KEY, KEY_POWER, -1),     // nonsense value
            record(EV_KEY, KEY_POWER << 8, 1), // the code in the other byte order
        ]
        .concat();
        let events = EventDecoder::default().feed(&not_presses);
        assert_eq!(events.len(), 6);
        assert!(events.iter().all(|event| !event.is_power_press()));
    }

    #[test]
    fn a_record_split_across_reads_waits_for_its_rest() {
        let bytes = one_press();
        let mut decoder = EventDecoder::default();
        let mut events = Vec::new();
        for piece in bytes.chunks(7) {
            events.extend(decoder.feed(piece));
        }
        assert_eq!(events, EventDecoder::default().feed(&bytes));
        assert!(decoder.feed(&bytes[..EVENT_BYTES - 1]).is_empty());
        assert!(decoder.feed(&[]).is_empty());
        assert_eq!(decoder.feed(&bytes[EVENT_BYTES - 1..]).len(), 4);
    }

    /// A sysfs tree shaped like a QEMU `pc` guest's: the ACPI power button (`LNXPWRBN`),
    /// the AT keyboard and a PC speaker, each with its `inputN` device and `eventN` handler,
    /// linked from `/sys/class/input` as the kernel links them.
    fn input_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let devices = [
            (
                "LNXSYSTM:00/LNXPWRBN:00",
                "input0",
                "event0",
                "Power Button",
            ),
            (
                "platform/i8042/serio0",
                "input1",
                "event1",
                "AT Translated Set 2 keyboard",
            ),
            ("platform/pcspkr", "input4", "event3", "PC Speaker"),
            (
                "LNXSYSTM:00/LNXSYBUS:00/PNP0C0C:00",
                "input5",
                "event4",
                "Power Button",
            ),
        ];
        std::fs::create_dir_all(root.join("sys/class/input")).unwrap();
        for (parent, input, event, name) in devices {
            let input_dir = root.join(format!("sys/devices/{parent}/input/{input}"));
            std::fs::create_dir_all(input_dir.join(event)).unwrap();
            std::fs::write(input_dir.join("name"), format!("{name}\n")).unwrap();
            std::os::unix::fs::symlink("..", input_dir.join(event).join("device")).unwrap();
            for link in [input, event] {
                let target = if link == input {
                    format!("../../devices/{parent}/input/{input}")
                } else {
                    format!("../../devices/{parent}/input/{input}/{event}")
                };
                std::os::unix::fs::symlink(target, root.join("sys/class/input").join(link))
                    .unwrap();
            }
        }
        // A handler that lost its device (hot-unplugged while listed) is passed over.
        std::fs::create_dir_all(root.join("sys/class/input/event9")).unwrap();
        dir
    }

    #[test]
    fn finds_every_power_button_and_nothing_else() {
        let tree = input_tree();
        let buttons = find_power_buttons(&SysRoot::at(tree.path()));
        assert_eq!(
            buttons,
            [
                PowerButton {
                    event: "event0".into(),
                    device: "/dev/input/event0".into()
                },
                PowerButton {
                    event: "event4".into(),
                    device: "/dev/input/event4".into()
                },
            ]
        );
    }

    #[test]
    fn a_machine_without_input_devices_has_no_buttons() {
        let empty = tempfile::tempdir().unwrap();
        assert!(find_power_buttons(&SysRoot::at(empty.path())).is_empty());
    }

    #[test]
    fn watching_calls_back_once_per_press_and_reports_what_cannot_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file holding what the device would return: two presses.
        let recorded = dir.path().join("event0");
        std::fs::write(&recorded, [one_press(), one_press()].concat()).unwrap();
        let buttons = [
            PowerButton {
                event: "event0".into(),
                device: recorded,
            },
            PowerButton {
                event: "event7".into(),
                device: dir.path().join("missing"),
            },
        ];
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let on_press: OnPress = Arc::new(move |button: &PowerButton| {
            tx.lock().unwrap().send(button.event.clone()).unwrap();
        });
        let failed = watch(&buttons, &on_press);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0.event, "event7");
        drop(on_press);
        let presses: Vec<String> = rx.iter().collect();
        assert_eq!(presses, ["event0", "event0"]);
    }
}
