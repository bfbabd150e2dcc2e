#!/usr/bin/env bash
# Installs what commpath needs on a Debian machine (run as root): apt packages and a virtualenv in .venv.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
extras=${COMMPATH_EXTRAS:-test}
apt_packages=(tshark tcpdump openssh-server openssh-client iproute2 iptables nftables openssl procps time
              etcd-server chromium python3-venv gcc libc6-dev clang libclang-rt-dev
              containerd runc containernetworking-plugins busybox-static conntrack)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=".venv/.commpath-installed-$(sha256sum pyproject.toml | cut -c1-16)-$extras"
if [ ! -f "$stamp" ]; then
  echo "setup: installing commpath[$extras] into .venv"
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import commpath" 
  touch "$stamp"
fi
# byte-compile the (editable) package as pip does for a regular install, even where
# PYTHONDONTWRITEBYTECODE is set; and build the C kernels once, before anything is timed
.venv/bin/python -m compileall -q commpath >/dev/null || true
.venv/bin/python -c "from commpath.decode._native import lib; lib()"
