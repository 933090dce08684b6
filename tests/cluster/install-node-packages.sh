#!/usr/bin/env bash
# Installs the Debian packages the local real node needs (container runtime, CNI
# plugins, image builders), only when something is missing. Needs root; without it,
# says what to install and leaves the rest of `make setup` alone.
set -euo pipefail
packages=(containerd runc containernetworking-plugins buildah mmdebstrap iptables iproute2 openssl)
needed=()
have() { command -v "$1" >/dev/null 2>&1; }
have containerd || needed+=(containerd)
have runc || [[ -x /usr/sbin/runc ]] || needed+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/portmap ]] || needed+=(containernetworking-plugins)
have buildah || needed+=(buildah)
have mmdebstrap || needed+=(mmdebstrap)
have iptables || needed+=(iptables)
have ip || needed+=(iproute2)
have openssl || needed+=(openssl)
if ((${#needed[@]} == 0)); then exit 0; fi
if [[ $(id -u) -ne 0 ]]; then
  echo "the real node needs Debian packages: ${needed[*]} (run as root: apt-get install ${packages[*]});" \
    "without them set TUNEGATE_REAL_NODE=0" >&2
  exit 0
fi
started=$(date +%s)
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
echo "installed ${needed[*]} in $(( $(date +%s) - started ))s" >&2
