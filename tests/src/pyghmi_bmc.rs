use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output, Stdio};

use crate::ipmi_sim::{IPMI_PASSWORD, IPMI_USER, make_executable, udp_port_taken, wait_for_daemon};
use crate::net::free_udp_port;
use crate::process::ChildGuard;
use crate::tools::venv_tool;

/// A BMC built on pyghmi's `Bmc` server class, bound to 127.0.0.1. Power and boot device
/// live in files so tests can read them; every action is appended to `actions.log`.
///
/// With `--suite17` the script also installs `Sha256Session`, our extension of pyghmi's
/// server session: pyghmi 1.6.19's server answers every Open Session with cipher suite 3,
/// and no BMC simulator on this machine speaks suite 17, so the RAKP steps are redone here
/// (from IPMI 2.0 §13.20–13.32) with the hash the client proposed. pyghmi's own code still
/// does all framing, AES and per-packet integrity. The tests validate the extension with
/// two independent suite-17 clients — `ipmitool -C 17` and pyghmi's client — before
/// trusting it with Rivet.
const BMC_SCRIPT: &str = r#"
import hashlib
import hmac
import os
import struct
import sys

import pyghmi.ipmi.bmc as bmc
import pyghmi.ipmi.private.constants as constants
import pyghmi.ipmi.private.serversession as serversession

PORT = int(sys.argv[1])
STATE = sys.argv[2]
USERS = {sys.argv[3]: sys.argv[4]}


def put(name, value):
    path = os.path.join(STATE, name)
    with open(path + '.new', 'w') as f:
        f.write(value + '\n')
    os.replace(path + '.new', path)


def get(name):
    with open(os.path.join(STATE, name)) as f:
        return f.read().strip()


def log(action):
    with open(os.path.join(STATE, 'actions.log'), 'a') as f:
        f.write(action + '\n')


class FileBackedBmc(bmc.Bmc):
    def get_power_state(self):
        return get('power')

    def power_on(self):
        log('on')
        put('power', 'on')

    def power_off(self):
        log('off')
        put('power', 'off')

    def power_cycle(self):
        log('cycle')
        put('power', 'on')

    def power_reset(self):
        log('reset')

    def power_shutdown(self):
        log('shutdown')
        put('power', 'off')

    def get_boot_device(self):
        return get('boot')

    def set_boot_device(self, device):
        log('boot ' + device)
        put('boot', device)

    def set_system_boot_options(self, request, session):
        # The bytes as pyghmi decrypted and verified them, before it keeps only the device.
        log('bootparam ' + bytes(request['data']).hex())
        super().set_system_boot_options(request, session)


# Open Session request: algorithm numbers at these payload offsets (IPMI 2.0 table 13-9).
SUITES = {(3, 4, 1): (hashlib.sha256, 16), (1, 1, 1): (hashlib.sha1, 12)}


class Sha256Session(serversession.ServerSession):
    def create_open_session_response(self, request):
        proposed = (request[12] & 0x3F, request[20] & 0x3F, request[28] & 0x3F)
        self.clientsessionid = request[4:8]
        self.managedsessionid = os.urandom(4)
        self.privlevel = 4
        if proposed not in SUITES:
            return bytearray([request[0], 0x11, 0, 0]) + self.clientsessionid
        self.currhashlib, self.currhashlen = SUITES[proposed]
        response = bytearray([request[0], 0, self.privlevel, 0])
        response += self.clientsessionid + self.managedsessionid
        for kind, algorithm in enumerate(proposed):
            response += bytearray([kind, 0, 0, 8, algorithm, 0, 0, 0])
        return response

    def mac(self, key, data):
        return hmac.new(key, bytes(data), self.currhashlib).digest()

    def name_and_role(self):
        return bytes([self.rolem, len(self.username)]) + self.username

    def _got_rakp1(self, data):
        tag = data[0]
        self.Rm = bytes(data[8:24])
        self.rolem = data[24]
        self.maxpriv = self.rolem & 0x07
        self.username = bytes(data[28:28 + data[27]])
        password = self.authdata.get(self.username.decode('utf-8'))
        if password is None:
            self.send_payload(bytearray([tag, 0x0D, 0, 0]) + self.clientsessionid,
                              constants.payload_types['rakp2'], retry=False)
            return
        self.kuid = password.encode('utf-8')
        self.Rc = os.urandom(16)
        self.uuiddata = self.uuid.bytes
        code = self.mac(self.kuid, bytes(self.clientsessionid) + bytes(self.managedsessionid)
                        + self.Rm + self.Rc + self.uuiddata + self.name_and_role())
        self.send_payload(bytearray([tag, 0, 0, 0]) + self.clientsessionid + self.Rc
                          + self.uuiddata + code,
                          constants.payload_types['rakp2'], retry=False)

    def _got_rakp3(self, data):
        tag = data[0]
        expected = self.mac(self.kuid, self.Rc + bytes(self.clientsessionid)
                            + self.name_and_role())
        if data[1] != 0 or not hmac.compare_digest(expected, bytes(data[8:])):
            self.send_payload(bytearray([tag, 0x0F, 0, 0]) + self.clientsessionid,
                              constants.payload_types['rakp4'], retry=False)
            return
        sik = self.mac(self.kuid, self.Rm + self.Rc + self.name_and_role())
        self.k1 = self.mac(sik, b'\x01' * 20)
        self.k2 = self.mac(sik, b'\x02' * 20)
        self.aeskey = self.k2[:16]
        icv = self.mac(sik, self.Rm + bytes(self.managedsessionid) + self.uuiddata)
        self.localsid = struct.unpack('<I', bytes(self.managedsessionid))[0]
        self.ipmicallback = self.handle_client_request
        self.send_payload(bytearray([tag, 0, 0, 0]) + self.clientsessionid
                          + icv[:self.currhashlen],
                          constants.payload_types['rakp4'], retry=False)
        self.confalgo = 'aes'
        self.integrityalgo = 'hmac'
        self.sequencenumber = 1
        self.sessionid = struct.unpack('<I', bytes(self.clientsessionid))[0]


if '--suite17' in sys.argv:
    serversession.ServerSession = Sha256Session

put('power', 'off')
put('boot', 'default')
open(os.path.join(STATE, 'actions.log'), 'w').close()
FileBackedBmc(USERS, port=PORT, address='127.0.0.1').listen()
"#;

/// A pyghmi BMC on 127.0.0.1, killed on drop. See the module's script for what it does.
#[derive(Debug)]
pub struct PyghmiBmc {
    dir: tempfile::TempDir,
    port: u16,
    _process: ChildGuard,
}

impl PyghmiBmc {
    /// pyghmi's server as shipped: suite 3 only, whatever the client proposes.
    pub fn start() -> Self {
        Self::spawn(false)
    }

    /// pyghmi's server with the suite-17 extension (suites 17 and 3, as proposed).
    pub fn start_with_suite17() -> Self {
        Self::spawn(true)
    }

    fn spawn(suite17: bool) -> Self {
        let python = venv_tool("python");
        let dir = crate::scratch_dir("pyghmi-bmc");
        let script = dir.path().join("bmc.py");
        std::fs::write(&script, BMC_SCRIPT).unwrap();
        make_executable(&script);
        let port = free_udp_port();
        let log = std::fs::File::create(dir.path().join("bmc.log")).unwrap();
        let mut command = Command::new(python);
        command
            .arg(&script)
            .arg(port.to_string())
            .arg(dir.path())
            .args([IPMI_USER, IPMI_PASSWORD])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if suite17 {
            command.arg("--suite17");
        }
        let mut process = ChildGuard::spawn("pyghmi BMC", &mut command);
        let state_ready = dir.path().join("actions.log");
        wait_for_daemon(
            "the pyghmi BMC",
            &mut process,
            &dir.path().join("bmc.log"),
            || udp_port_taken(port) && state_ready.exists(),
        );
        Self {
            dir,
            port,
            _process: process,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        (Ipv4Addr::LOCALHOST, self.port).into()
    }

    /// `"on"` or `"off"`.
    pub fn power(&self) -> String {
        self.read("power")
    }

    /// pyghmi's name for the boot device: `default`, `network`, `hd`, `optical`, `setup`…
    pub fn boot(&self) -> String {
        self.read("boot")
    }

    /// Every power and boot action, one per line (`on`, `off`, `shutdown`, `cycle`, `reset`,
    /// `boot <device>`, and `bootparam <hex>` with the data of each Set System Boot Options).
    pub fn actions(&self) -> Vec<String> {
        self.read("actions.log")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The server's own output (tracebacks end up here).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bmc.log")).unwrap_or_default()
    }

    /// Runs `ipmitool -I lanplus -C <suite>` as the administrator against this BMC.
    pub fn ipmitool(&self, suite: &str, args: &[&str]) -> Output {
        crate::ipmi_sim::ipmitool(self.port, suite, args)
    }

    /// Asks for the power state with pyghmi's own client (which proposes suite 17 first and
    /// falls back to 3). It prints the state and its integrity code length: 16 bytes is
    /// HMAC-SHA256-128 (suite 17), 12 is HMAC-SHA1-96 (suite 3).
    pub fn pyghmi_client_power(&self) -> Output {
        let program = format!(
            "import pyghmi.ipmi.command as c\n\
             cmd = c.Command(bmc='127.0.0.1', port={}, userid='{IPMI_USER}', \
             password='{IPMI_PASSWORD}')\n\
             print(cmd.get_power()['powerstate'], cmd.ipmi_session.currhashlen)",
            self.port
        );
        Command::new(venv_tool("python"))
            .args(["-c", &program])
            .output()
            .expect("run pyghmi's client")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .unwrap()
            .trim()
            .to_owned()
    }
}
