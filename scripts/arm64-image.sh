#!/usr/bin/env bash
# The README's "Deploy on a Raspberry Pi" on a Debian bookworm arm64 system booted with systemd
# (qemu-system-aarch64, virt machine, Cortex-A72 emulated): the rollcall-gateway package is
# installed with apt, `rollcall provision` and `systemctl enable --now rollcalld` run as IT types
# them, a simulated RDM6300 on the guest's PL011 UART (/dev/ttyAMA0, as on a Pi) taps a card, and
# the punch is looked for in the centre's PostgreSQL (CampsHub360's schema) on this machine,
# reached over TLS through a Mosquitto started here. Prints a verdict with timings; exits 0 when
# everything passed. On request only (not in CI: it takes many minutes), as root.
#
#   scripts/arm64-image.sh                 the debug package (quick to build, big and slow)
#   scripts/arm64-image.sh --release       the optimised package, as shipped
# Options: --rebuild-rootfs (debootstrap again), --smp N (guest CPUs, default 2),
#          --timeout-min N (the guest's whole run, default 40), --work DIR.
#
# Everything lives in target/arm64-image/: rootfs/ (debootstrap's root file system, kept: a
# second run skips it), deb/ (the package), run/ (this run's disk image, console.log, and the
# logs of Mosquitto, ingest and qemu). The host side is tests/examples/arm64_image/ (main.rs;
# guest.sh, what the guest runs; rollcall-arm64-image.service, which runs it at boot).
# Needs: debootstrap, qemu-user-static (binfmt for the chroot), qemu-system-arm, e2fsprogs,
# installed here when missing, and what scripts/install-deps.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dev
rebuild=false
smp=2
timeout_min=40
work=target/arm64-image
while (($#)); do
  case "$1" in
  --release) profile=release ;;
  --rebuild-rootfs) rebuild=true ;;
  --smp) smp="$2"; shift ;;
  --timeout-min) timeout_min="$2"; shift ;;
  --work) work="$2"; shift ;;
  -h | --help) sed -n '2,21p' "$0"; exit 0 ;;
  *) echo "arm64-image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$(id -u)" != 0 ]; then
  echo "arm64-image.sh: run as root (debootstrap, chroot and mkfs.ext4 -d of a root file system need it)" >&2
  exit 2
fi
t_start=$(date +%s)
log() { echo "arm64-image: $* ($(($(date +%s) - t_start)) s)"; }

# Tools, installed as scripts/install-deps.sh does: only what is missing.
scripts/install-deps.sh
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have qemu-system-aarch64 || need+=(qemu-system-arm)
have qemu-aarch64-static || need+=(qemu-user-static)
have debootstrap || need+=(debootstrap)
have mkfs.ext4 || need+=(e2fsprogs)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The chroot runs arm64 programs through qemu-user: register it where systemd did not (a
# container or a machine not booted with systemd). The F flag keeps it usable inside the chroot.
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  /usr/lib/systemd/systemd-binfmt /usr/lib/binfmt.d/qemu-aarch64.conf
fi

# 1. The root file system: minimal Debian bookworm arm64 with systemd, udev and the kernel.
mkdir -p "$work"
rootfs="$work/rootfs"
stamp="$rootfs/.arm64-image-rootfs-v1"
if $rebuild || [ ! -e "$stamp" ]; then
  log "debootstrap bookworm arm64 (several minutes under qemu-user)"
  rm -rf "$rootfs" "$work/rootfs.tmp"
  r="$work/rootfs.tmp"
  nice -n 10 debootstrap --arch=arm64 --variant=minbase \
    --include=systemd,systemd-sysv,udev,initramfs-tools,iproute2,kmod,ca-certificates,adduser \
    bookworm "$r" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  echo rollcall-pi >"$r/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 rollcall-pi\n' >"$r/etc/hosts"
  echo '/dev/vda / ext4 defaults,noatime 0 1' >"$r/etc/fstab"
  # qemu's user-mode network: DHCP on eth0 (net.ifnames=0 on the kernel command line).
  mkdir -p "$r/etc/systemd/network"
  printf '[Match]\nName=eth0\n\n[Network]\nDHCP=yes\n' >"$r/etc/systemd/network/80-eth0.network"
  chroot "$r" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service
  # The kernel console is hvc0 (virtio): a getty there would hang up the test's output.
  ln -sf /dev/null "$r/etc/systemd/system/serial-getty@hvc0.service"
  # The kernel, with an initramfs of only what the virt machine needs: the default MODULES=most
  # copies thousands of modules one process each, over 40 minutes under qemu-user here.
  echo 'MODULES=list' >"$r/etc/initramfs-tools/conf.d/arm64-image"
  printf '%s\n' virtio_pci virtio_mmio virtio_blk virtio_net virtio_console virtio_rng ext4 \
    >>"$r/etc/initramfs-tools/modules"
  mount -t proc proc "$r/proc"
  mount -t sysfs sysfs "$r/sys"
  trap 'umount "$r/proc" "$r/sys" 2>/dev/null || true' EXIT
  nice -n 10 chroot "$r" apt-get update -qq >>"$work/debootstrap.log" 2>&1
  nice -n 10 chroot "$r" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends linux-image-arm64 >>"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log"; exit 1; }
  umount "$r/proc" "$r/sys"
  trap - EXIT
  rm -rf "$r"/var/lib/apt/lists/*
  # In the guest, the DNS server of qemu's user-mode network (the host's resolver was copied).
  echo 'nameserver 10.0.2.3' >"$r/etc/resolv.conf"
  chroot "$r" apt-get clean
  touch "$r/.arm64-image-rootfs-v1"
  mv "$r" "$rootfs"
  log "root file system ready: $(du -sh "$rootfs" | cut -f1)"
else
  log "root file system cached in $rootfs (--rebuild-rootfs to make it again)"
fi
# The test driver's unit, installed every run so an edit needs no new root file system.
install -m 0644 tests/examples/arm64_image/rollcall-arm64-image.service "$rootfs/etc/systemd/system/"
ln -sf /etc/systemd/system/rollcall-arm64-image.service \
  "$rootfs/etc/systemd/system/multi-user.target.wants/rollcall-arm64-image.service"
kernel=$(ls "$rootfs"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$rootfs"/boot/initrd.img-* | sort -V | tail -1)

# 2. The package, cross-built for aarch64 (as scripts/package.sh does, rollcall-gateway only).
arm=aarch64-unknown-linux-gnu
log "building rollcall-gateway for $arm (profile $profile)"
nice -n 10 cargo build --profile "$profile" --target "$arm" -p rollcall-daemon -p rollcall-provisioning
rm -rf "$work/deb"
nice -n 10 cargo deb --no-build --profile "$profile" --target "$arm" -p rollcall-daemon --output "$work/deb"
deb=$(ls "$work"/deb/rollcall-gateway_*_arm64.deb)
log "package: $deb ($(du -h "$deb" | cut -f1))"

# 3. The centre's binaries and the host side, for this machine (debug: they are not under test
# here; their own tests are in provisioning/tests and ingest/tests).
nice -n 10 cargo build -p rollcall-provisioning -p rollcall-ingest -p rollcall-tests \
  --bin rollcall --bin rollcall-ingest --example arm64_image
log "booting the arm64 image"
bin="${CARGO_TARGET_DIR:-target}/debug"
"$bin/examples/arm64_image" --work "$work" --rootfs "$rootfs" --kernel "$kernel" \
  --initrd "$initrd" --deb "$deb" --rollcall "$bin/rollcall" --ingest "$bin/rollcall-ingest" \
  --smp "$smp" --timeout-min "$timeout_min"
