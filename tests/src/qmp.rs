//! QEMU's machine protocol (QMP) on a Unix socket: enough to press a guest's buttons.
//!
//! Start the guest with [`Qmp::args`] (a listening socket in the test's directory), then
//! [`Qmp::connect`] and [`Qmp::execute`] commands such as `system_powerdown` (the ACPI power
//! button, what a BMC's soft power-off does to a real machine).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A connected QMP session, capabilities negotiated.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// The socket path for a guest named `name` under `dir`.
    pub fn socket(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}-qmp.sock"))
    }

    /// The QEMU arguments that make it listen for QMP on `socket` without waiting for a
    /// client before starting the guest.
    pub fn args(socket: &Path) -> [String; 2] {
        [
            "-qmp".to_owned(),
            format!("unix:{},server=on,wait=off", socket.display()),
        ]
    }

    /// Connects (retrying while QEMU creates the socket, up to `timeout`) and leaves the
    /// capabilities-negotiation mode.
    pub fn connect(socket: &Path, timeout: Duration) -> Self {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(err) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot connect to QMP at {}: {err}",
                        socket.display()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let writer = stream.try_clone().unwrap();
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message();
        assert!(
            greeting.get("QMP").is_some(),
            "not a QMP greeting: {greeting}"
        );
        qmp.execute("qmp_capabilities", json!({}));
        qmp
    }

    /// Runs `command` with `arguments` and returns its `return` value; a QMP error fails
    /// the test. Asynchronous events that arrive in between are skipped.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Value {
        let request = json!({"execute": command, "arguments": arguments});
        writeln!(self.writer, "{request}").unwrap();
        loop {
            let message = self.read_message();
            if let Some(value) = message.get("return") {
                return value.clone();
            }
            if let Some(error) = message.get("error") {
                panic!("QMP {command} failed: {error}");
            }
        }
    }

    fn read_message(&mut self) -> Value {
        let mut line = String::new();
        let read = self.reader.read_line(&mut line).unwrap();
        assert!(read > 0, "QEMU closed the QMP connection");
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("bad QMP message {line:?}: {err}"))
    }
}
