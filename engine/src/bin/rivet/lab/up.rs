//! `rivet lab up`: every piece is recorded in the state file as soon as it exists, and a
//! failure takes down whatever was made before it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::chassis::{self, Machine};
use super::network::{self, in_netns};
use super::process::{self, Process, find_tool, run_checked, spawn_detached};
use super::redfish::{self, RedfishTools};
use super::state::{self, LabHost, LabState};
use super::{BmcKind, UpArgs};
use rivet_engine::drivers::boot::agent_iso::AgentIsoTemplate;

/// The bridge's /24 inside the namespace; every lab has its own namespace, so they share it.
const SUBNET: [u8; 3] = [10, 77, 0];
const API_PORT: u16 = 8443;
const BOOT_HTTP_PORT: u16 = 8080;
/// ipmi_sim of host `i` (from 1) listens on the engine's address, port BASE + i.
const IPMI_PORT_BASE: u16 = 6230;
const BMC_USER: &str = "admin";
/// How long a soft power-off (the ACPI button, pressed through QEMU's monitor) may take
/// before the engine cuts the power. The agent powers off on the button within a second;
/// this bounds the wait for a provisioned OS instead: a real one shuts down under TCG well
/// within it, one that ignores the button (the demo's boot sector) is then cut off rather
/// than holding a delete for the engine's production default of three minutes.
const SOFT_OFF_SECS: u64 = 30;
const STARTUP: Duration = Duration::from_secs(60);
/// The agent ISO's name in the image directory and under the engine's files.
const AGENT_ISO: &str = "rivet-agent.iso";

/// Tools found up front, so a missing one is named before anything is made.
struct Tools {
    qemu: PathBuf,
    qemu_img: PathBuf,
    bmc: BmcTools,
    rivet: PathBuf,
}

enum BmcTools {
    Ipmi { ipmi_sim: PathBuf },
    Redfish(RedfishTools),
}

pub(crate) fn run(args: &UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    state::validate_name(&args.name)?;
    process::require_root("rivet lab up")?;
    state::ensure_free(&args.name)?;
    find_tool("ip")?;
    let tools = Tools {
        qemu: find_tool("qemu-system-x86_64")?,
        qemu_img: find_tool("qemu-img")?,
        bmc: match args.bmc {
            BmcKind::Ipmi => BmcTools::Ipmi {
                ipmi_sim: find_tool("ipmi_sim")?,
            },
            BmcKind::Redfish | BmcKind::RedfishVirtualMedia => {
                BmcTools::Redfish(RedfishTools::find()?)
            }
        },
        rivet: std::env::current_exe().context("locating this rivet binary")?,
    };
    let dir = match &args.state_dir {
        Some(dir) => std::path::absolute(dir)?,
        None => PathBuf::from("/var/tmp/rivet-lab").join(&args.name),
    };
    if dir.exists() && !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "{} exists and is not empty; the lab removes its directory on `down`, so give \
             it a new or empty one",
            dir.display()
        );
    }
    if args.bmc.is_redfish() {
        redfish::check_reachable(&dir)?;
    }
    let agent = agent_files(&args.image_dir, args.bmc == BmcKind::RedfishVirtualMedia)?;
    let server_ip = Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 1);
    let lab = LabState {
        name: args.name.clone(),
        netns: state::netns_name(&args.name),
        dir,
        bmc_kind: args.bmc,
        server_ip,
        netns_created: false,
        engine: None,
        api_url: format!("https://{server_ip}:{API_PORT}"),
        hosts: Vec::new(),
        libvirtd: None,
        virsh: None,
        sushy: None,
    }
    .claim()?;
    let mut lab = lab;
    match build(&mut lab, args, &tools, &agent) {
        Ok(()) => {
            print!("{}", lab.describe());
            println!(
                "lab {} is up in {:.1} s; `rivet lab down --name {}` removes it",
                lab.name,
                started.elapsed().as_secs_f64(),
                lab.name
            );
            Ok(())
        }
        Err(err) => {
            let rollback = lab.tear_down(false);
            let err = err.context(format!("lab {} could not be built", lab.name));
            match rollback {
                Ok(()) => Err(err.context("everything it had made was removed")),
                Err(left) => Err(err.context(format!("and rolling back failed: {left:#}"))),
            }
        }
    }
}

/// The agent's kernel and initramfs (and its ISO with `iso`), built with
/// scripts/agent-image.sh if missing.
fn agent_files(image_dir: &Path, iso: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = vec![image_dir.join("vmlinuz"), image_dir.join("initramfs.img")];
    if iso {
        files.push(image_dir.join(AGENT_ISO));
    }
    if !files.iter().all(|file| file.is_file()) {
        build_agent_image(image_dir, iso)?;
    }
    if iso {
        // An ISO from before the cmdline slot boots, but can never carry a host's
        // parameters: refuse it now rather than at the first boot.
        let path = image_dir.join(AGENT_ISO);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        AgentIsoTemplate::parse(bytes.into()).with_context(|| {
            format!(
                "{}: rebuild it with `scripts/agent-image.sh --out {}`",
                path.display(),
                image_dir.display()
            )
        })?;
    }
    Ok(files)
}

fn build_agent_image(image_dir: &Path, iso: bool) -> anyhow::Result<()> {
    let flags: &[&str] = if iso {
        &["--fast"]
    } else {
        &["--no-iso", "--fast"]
    };
    let script = Path::new("scripts/agent-image.sh");
    if !script.is_file() {
        bail!(
            "no agent image in {}: build it with `scripts/agent-image.sh {}` in a Rivet \
             checkout, or pass --image-dir",
            image_dir.display(),
            flags[..flags.len() - 1].join(" ")
        );
    }
    eprintln!(
        "building the agent image into {} (scripts/agent-image.sh {})…",
        image_dir.display(),
        flags.join(" ")
    );
    let status = Command::new("bash")
        .arg(script)
        .args(flags)
        .arg("--out")
        .arg(image_dir)
        .status()
        .context("running scripts/agent-image.sh")?;
    if !status.success() {
        bail!("scripts/agent-image.sh failed ({status})");
    }
    Ok(())
}

fn build(
    lab: &mut LabState,
    args: &UpArgs,
    tools: &Tools,
    agent: &[PathBuf],
) -> anyhow::Result<()> {
    let files = lab.dir.join("files");
    std::fs::create_dir_all(files.join("agent"))
        .with_context(|| format!("creating {}", files.display()))?;
    std::fs::create_dir_all(lab.engine_dir())?;
    for (source, name) in agent.iter().zip(["vmlinuz", "initramfs.img", AGENT_ISO]) {
        std::fs::copy(source, files.join("agent").join(name))
            .with_context(|| format!("copying {}", source.display()))?;
    }
    let password = random_password()?;
    let password_file = lab.dir.join("bmc-password");
    write_private(&password_file, &password)?;

    network::create_netns(&lab.netns, &format!("{}/24", lab.server_ip))?;
    lab.netns_created = true;
    lab.save()?;

    match &tools.bmc {
        BmcTools::Ipmi { ipmi_sim } => {
            for index in 1..=u16::from(args.hosts) {
                let host = make_ipmi_host(lab, args, tools, index, &password)?;
                lab.hosts.push(host);
                lab.save()?;
                let host = lab.hosts.last().context("the host just added")?;
                let bmc = start_ipmi_sim(lab, ipmi_sim, host, index)?;
                if let Some(host) = lab.hosts.last_mut() {
                    host.bmc = Some(bmc);
                }
                lab.save()?;
            }
        }
        BmcTools::Redfish(redfish_tools) => {
            lab.virsh = Some(find_tool("virsh")?);
            redfish::open_dirs(&[&lab.dir, &lab.dir.join("hosts")])?;
            let libvirtd = redfish::start_libvirtd(redfish_tools, &lab.netns, &lab.dir)?;
            lab.libvirtd = Some(libvirtd);
            lab.save()?;
            for index in 1..=u16::from(args.hosts) {
                let host = make_redfish_host(lab, args, tools, redfish_tools, index)?;
                lab.hosts.push(host);
                lab.save()?;
            }
            let sushy = redfish::start_sushy(
                redfish_tools,
                &lab.netns,
                &lab.dir,
                lab.server_ip,
                BMC_USER,
                &password,
            )?;
            lab.sushy = Some(sushy);
            lab.save()?;
        }
    }

    let config = lab.dir.join("rivet.toml");
    std::fs::write(&config, serve_config(lab, &files))?;
    let log = lab.dir.join("engine.log");
    let engine = spawn_detached(
        in_netns(&lab.netns, &tools.rivet)
            .args(["serve", "--config"])
            .arg(&config),
        &log,
    )?;
    lab.engine = Some(engine.clone());
    lab.save()?;
    wait_for("the engine to serve its API", STARTUP, || {
        if !engine.is_running() {
            bail!("the engine exited:\n{}", tail(&log));
        }
        Ok(std::fs::read_to_string(&log)?.contains("serving the API"))
    })?;
    std::fs::write(
        lab.dir.join("env"),
        format!(
            "RIVET_URL={}\nRIVET_STATE_DIR={}\n",
            lab.api_url,
            lab.engine_dir().display()
        ),
    )?;

    for host in &lab.hosts {
        enroll(lab, tools, host, &password_file)?;
    }
    for host in &lab.hosts {
        wait_for(
            &format!("{} to become available", host.name),
            STARTUP,
            || Ok(host_state(lab, tools, &host.name)? == "available"),
        )?;
    }
    Ok(())
}

/// What every host has, whatever its BMC.
struct Machinery {
    name: String,
    dir: PathBuf,
    tap: String,
    disk: PathBuf,
    mac: String,
}

/// Host `index`'s directory, tap (made for `tap_owner`), empty disk and MAC.
fn host_basics(
    lab: &LabState,
    args: &UpArgs,
    tools: &Tools,
    index: u16,
    tap_owner: Option<&str>,
) -> anyhow::Result<Machinery> {
    let name = format!("node-{index}");
    let dir = lab.dir.join("hosts").join(&name);
    std::fs::create_dir_all(&dir)?;
    let tap = format!("tap{index}");
    network::add_tap(&lab.netns, &tap, tap_owner)?;
    let disk = dir.join("disk.qcow2");
    run_checked(
        Command::new(&tools.qemu_img)
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg(format!("{}G", args.disk_gib)),
    )?;
    let [high, low] = index.to_be_bytes();
    let mac = format!("52:54:00:77:{high:02x}:{low:02x}");
    Ok(Machinery {
        name,
        dir,
        tap,
        disk,
        mac,
    })
}

/// A libvirt domain of the lab's libvirtd, a system of its sushy-emulator.
fn make_redfish_host(
    lab: &LabState,
    args: &UpArgs,
    tools: &Tools,
    redfish_tools: &RedfishTools,
    index: u16,
) -> anyhow::Result<LabHost> {
    let Machinery {
        name,
        dir,
        tap,
        disk,
        mac,
    } = host_basics(lab, args, tools, index, Some(redfish::USER))?;
    let uuid = redfish::random_uuid()?;
    redfish::define(
        redfish_tools,
        &lab.dir,
        &dir,
        &redfish::Domain {
            name: &name,
            uuid: &uuid,
            mac: &mac,
            tap: &tap,
            disk: &disk,
            serial_log: &chassis::serial_log(&dir),
            memory_mib: args.memory_mib,
        },
    )?;
    let scheme = match lab.bmc_kind {
        BmcKind::RedfishVirtualMedia => "redfish-virtualmedia",
        _ => "redfish",
    };
    Ok(LabHost {
        bmc_address: format!(
            "{scheme}+http://{}:{}/redfish/v1/Systems/{uuid}",
            lab.server_ip,
            redfish::SUSHY_PORT
        ),
        qemu_pidfile: Some(redfish::qemu_pidfile(&lab.dir, &name)),
        name,
        mac,
        dir,
        tap,
        bmc: None,
    })
}

/// A QEMU started and stopped by the chassis control of its own `ipmi_sim`.
fn make_ipmi_host(
    lab: &LabState,
    args: &UpArgs,
    tools: &Tools,
    index: u16,
    password: &str,
) -> anyhow::Result<LabHost> {
    let Machinery {
        name,
        dir,
        tap,
        disk,
        mac,
    } = host_basics(lab, args, tools, index, None)?;
    Machine {
        name: name.clone(),
        qemu: tools.qemu.clone(),
        memory_mib: args.memory_mib,
        disk,
        tap: tap.clone(),
        mac: mac.clone(),
    }
    .install(&dir)?;
    let port = IPMI_PORT_BASE + index;
    write_private(
        &dir.join("lan.conf"),
        &ipmi_config(lab.server_ip, port, &tools.rivet, &dir, password),
    )?;
    // Manufacturer 0x1291 and product 0x0f02, as OpenIPMI's examples use.
    std::fs::write(
        dir.join("bmc.emu"),
        "mc_setbmc 0x20\n\
         mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
         mc_enable 0x20\n",
    )?;
    std::fs::create_dir_all(dir.join("ipmi-state"))?;
    Ok(LabHost {
        name,
        mac,
        bmc_address: format!("ipmi://{}:{port}", lab.server_ip),
        dir,
        tap,
        bmc: None,
        qemu_pidfile: None,
    })
}

fn ipmi_config(address: Ipv4Addr, port: u16, rivet: &Path, dir: &Path, password: &str) -> String {
    format!(
        r#"name "rivet-lab"
set_working_mc 0x20
  startlan 1
    addr {address} {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
    lan_config_program "/bin/true"
  endlan
  chassis_control "{rivet} lab chassis-control {dir}"
  user 2 true "{BMC_USER}" "{password}" admin 10 none md2 md5 straight
"#,
        rivet = rivet.display(),
        dir = dir.display(),
    )
}

fn start_ipmi_sim(
    lab: &LabState,
    ipmi_sim: &Path,
    host: &LabHost,
    index: u16,
) -> anyhow::Result<Process> {
    let dir = &host.dir;
    let log = dir.join("ipmi_sim.log");
    let bmc = spawn_detached(
        in_netns(&lab.netns, ipmi_sim)
            .arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("bmc.emu"))
            .arg("-s")
            .arg(dir.join("ipmi-state"))
            .arg("-n"),
        &log,
    )?;
    let port = IPMI_PORT_BASE + index;
    wait_for(&format!("ipmi_sim of {}", host.name), STARTUP, || {
        if !bmc.is_running() {
            bail!("ipmi_sim exited:\n{}", tail(&log));
        }
        Ok(udp_bound(bmc.pid, port))
    })?;
    Ok(bmc)
}

/// Whether process `pid` can see a UDP socket bound to `port` (read through its own
/// `/proc/<pid>/net`, which is its namespace's table).
fn udp_bound(pid: i32, port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    std::fs::read_to_string(format!("/proc/{pid}/net/udp"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .any(|local| local.ends_with(&wanted))
}

fn serve_config(lab: &LabState, files: &Path) -> String {
    let quote = |value: &str| toml::Value::from(value).to_string();
    let ip = lab.server_ip;
    let [a, b, c, _] = ip.octets();
    format!(
        "state_dir = {state}\n\
         [api]\nlisten = \"{ip}:{API_PORT}\"\n\
         [engine]\npower_poll_interval_ms = 500\nsoft_power_off_timeout_secs = {SOFT_OFF_SECS}\n\
         [drivers]\nkind = \"real\"\n\
         [drivers.real.boot]\n\
         engine_url = {url}\n\
         http_listen = \"{ip}:{BOOT_HTTP_PORT}\"\n\
         interface = \"{bridge}\"\n\
         server_ip = \"{ip}\"\n\
         dhcp = \"authoritative\"\n\
         dhcp_pool = [\"{a}.{b}.{c}.100\", \"{a}.{b}.{c}.199\"]\n\
         files_root = {files}\n\
         agent_kernel = \"agent/vmlinuz\"\n\
         agent_initrds = [\"agent/initramfs.img\"]\n\
         agent_iso = \"agent/{AGENT_ISO}\"\n\
         agent_cmdline = \"console=ttyS0,115200\"\n",
        state = quote(&lab.engine_dir().to_string_lossy()),
        url = quote(&lab.api_url),
        bridge = network::BRIDGE,
        files = quote(&files.to_string_lossy()),
    )
}

/// `rivet host …` inside the namespace, against the lab's engine.
fn host_command(lab: &LabState, tools: &Tools) -> Command {
    let mut command = in_netns(&lab.netns, &tools.rivet);
    command
        .args(["-q", "host", "--url", &lab.api_url, "--state-dir"])
        .arg(lab.engine_dir());
    command
}

/// Enrols a host powered off, without inspection or cleaning: `lab up` leaves the VMs
/// idle; inspecting and provisioning are the user's (or the demo's) next steps.
fn enroll(
    lab: &LabState,
    tools: &Tools,
    host: &LabHost,
    password_file: &Path,
) -> anyhow::Result<()> {
    run_checked(
        host_command(lab, tools)
            .args(["enroll", &host.name, "--bmc", &host.bmc_address])
            .args([
                "--username",
                BMC_USER,
                "--mac",
                &host.mac,
                "--password-file",
            ])
            .arg(password_file)
            .args([
                "--offline",
                "--inspection",
                "disabled",
                "--cleaning",
                "disabled",
                "--boot-mode",
                match lab.bmc_kind {
                    // ipmi_sim's chassis control cannot change the firmware: SeaBIOS.
                    BmcKind::Ipmi => "legacy",
                    // sushy gives the domain OVMF for UEFI, Metal³'s default.
                    BmcKind::Redfish | BmcKind::RedfishVirtualMedia => "uefi",
                },
            ]),
    )
    .with_context(|| format!("enrolling {}", host.name))
    .map(drop)
}

fn host_state(lab: &LabState, tools: &Tools, name: &str) -> anyhow::Result<String> {
    let shown = run_checked(host_command(lab, tools).args(["--json", "show", name]))?;
    let view: serde_json::Value = serde_json::from_str(&shown)
        .with_context(|| format!("`rivet host show {name}` printed no JSON: {shown}"))?;
    Ok(view["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

pub(crate) fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {} s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// 16 hex characters (IPMI 2.0 passwords hold at most 20 bytes).
fn random_password() -> anyhow::Result<String> {
    Ok(process::random_bytes::<8>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

pub(crate) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
