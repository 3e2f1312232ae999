#!/usr/bin/env bash
# Installs every system package and Python tool Rivet's tests, demo and benchmarks need.
# Idempotent: installs only what is missing, so a second run takes about a second.
# Needs root (Debian 12). Fails loudly; never half-succeeds silently.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/target/venv"

if [ "$(id -u)" -ne 0 ]; then
  echo "deps: must run as root (apt-get)" >&2
  exit 1
fi

# Packages from bookworm proper.
base_packages=(
  # firmware and guest kernel for QEMU boots
  ipxe ipxe-qemu ovmf seabios linux-image-amd64 busybox-static cpio
  # IPMI peers and client
  openipmi ipmitool
  # DHCP / TFTP clients, servers and load generators (servers only as benchmark peers)
  isc-dhcp-client dhcping dhcpdump tftp-hpa tftpd-hpa atftp curl dnsmasq-base kea-admin
  # compression and hashing peers
  zstd pigz openssl
  # disks, partitions and filesystems for agent and image tests
  gdisk parted dosfstools mtools xorriso e2fsprogs xfsprogs lvm2 mdadm util-linux fdisk
  # more file-system signatures for the agent's cleaning tests
  btrfs-progs cryptsetup-bin
  # the CA bundle the agent image carries (HTTPS image downloads in the ramdisk)
  ca-certificates
  # boot media: ISO hybrid boot and the UEFI stub for the demo's unified kernel image
  isolinux syslinux-common grub-efi-amd64-bin grub-pc-bin systemd-boot-efi binutils
  # network plumbing
  iproute2 iputils-ping bridge-utils
  # packet loss for the boot-service tests (this kernel has no netem) and a datagram sender
  iptables python3
  # benchmarking and general tools
  hyperfine wrk jq python3-venv procps psmisc time
  # build prerequisites for libvirt-python
  pkg-config gcc
)
# Packages that must come from bookworm-backports: the machine's qemu-utils already does,
# and it breaks bookworm's qemu-system-common (see docs: Operations → test peers).
backports_packages=(
  qemu-system-x86 qemu-system-common qemu-system-data qemu-utils
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev libvirt-daemon-system
)

missing() {
  local pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || echo "$pkg"
  done
}

backports_list=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$backports_list" ]; then
  echo "deps: adding bookworm-backports"
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  cat > "$backports_list" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  updated=no
fi

mapfile -t need_base < <(missing "${base_packages[@]}")
mapfile -t need_bpo < <(missing "${backports_packages[@]}")
if [ ${#need_base[@]} -gt 0 ] || [ ${#need_bpo[@]} -gt 0 ] || [ "${updated:-yes}" = no ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [ ${#need_bpo[@]} -gt 0 ]; then
    echo "deps: installing from bookworm-backports: ${need_bpo[*]}"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need_bpo[@]}" >/dev/null
  fi
  mapfile -t need_base < <(missing "${base_packages[@]}")
  if [ ${#need_base[@]} -gt 0 ]; then
    echo "deps: installing: ${need_base[*]}"
    apt-get install -y -qq --no-install-recommends "${need_base[@]}" >/dev/null
  fi
fi

# Python peers, pinned to the versions the reference measurements used.
python_tools=(sushy-tools==2.2.0 virtualbmc==3.3.0 pyghmi==1.6.19 libvirt-python==12.8.0)
if [ ! -x "$venv/bin/python" ]; then
  echo "deps: creating $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.rivet-tools"
if [ "$(cat "$stamp" 2>/dev/null)" != "${python_tools[*]}" ]; then
  echo "deps: installing ${python_tools[*]}"
  "$venv/bin/pip" install -q --disable-pip-version-check "${python_tools[@]}"
  echo "${python_tools[*]}" > "$stamp"
fi

# Fail now, with a clear list, if anything a test needs is still absent.
required_programs=(
  qemu-system-x86_64 qemu-img qemu-io ipmi_sim ipmitool busybox dhclient dhcping atftp tftp in.tftpd
  curl dnsmasq perfdhcp zstd pigz openssl sgdisk wipefs mkfs.ext4 mkfs.xfs mkfs.vfat xorriso
  pvcreate mdadm mkfs.btrfs cryptsetup ip hyperfine jq virsh libvirtd objcopy
  grub-mkrescue mformat setpriv iptables python3
)
absent=()
for program in "${required_programs[@]}"; do
  command -v "$program" >/dev/null 2>&1 || [ -x "/usr/sbin/$program" ] || [ -x "/sbin/$program" ] || absent+=("$program")
done
for file in /etc/ssl/certs/ca-certificates.crt /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi /usr/lib/ipxe/qemu/efi-virtio.rom /usr/share/OVMF/OVMF_CODE_4M.fd /usr/lib/systemd/boot/efi/linuxx64.efi.stub; do
  [ -e "$file" ] || absent+=("$file")
done
ls /boot/vmlinuz-* >/dev/null 2>&1 || absent+=("/boot/vmlinuz-*")
for tool in sushy-emulator sushy-static vbmc pyghmicons; do
  [ -x "$venv/bin/$tool" ] || absent+=("venv:$tool")
done
if [ ${#absent[@]} -gt 0 ]; then
  echo "deps: still missing after installation: ${absent[*]}" >&2
  exit 1
fi
echo "deps: everything is installed"
