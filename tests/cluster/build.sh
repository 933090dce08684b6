#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# kwok, helm and the MinIO object store, and for the real node the kubelet, CoreDNS,
# a pause binary and a fake GPU device plugin, and Kueue with its CRDs and webhook
# rules, from source into a cache directory keyed
# by a hash of the pins, and prints that directory. A second run with unchanged pins
# does nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
# shellcheck source=versions.env
source ./versions.env

cache_root="${TUNEGATE_CACHE:-$HOME/.cache/tunegate}"
pins_hash="$( { cat go.mod go.sum versions.env build.sh cmd/*/main.go; go env GOVERSION; } | sha256sum | cut -c1-16)"
out="$cache_root/bin/$pins_hash"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kwok helm minio
  coredns crictl pause fake-gpu-device-plugin kueue)

complete() {
  for b in "${binaries[@]}"; do [[ -x "$out/$b" ]] || return 1; done
  [[ -s "$out/kueue-release/webhooks.yaml" ]]
}
if complete; then echo "$out"; exit 0; fi

mkdir -p "$out"
start=$(date +%s)
export GOFLAGS=-mod=mod
k8s_version="$(go list -m -f '{{.Version}}' k8s.io/kubernetes)"
k8s_minor="$(echo "$k8s_version" | cut -d. -f2)"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  version_flags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  version_flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet fake-gpu-device-plugin; do
  [[ -x "$out/$b" ]] && continue
  t=$(date +%s)
  go build -trimpath -ldflags "-s -w $version_flags" -o "$out/$b.tmp" "./cmd/$b"
  mv "$out/$b.tmp" "$out/$b"
  echo "built $b in $(( $(date +%s) - t ))s" >&2
done

install_tool() { # name module-path version ldflags
  local name=$1 pkg=$2 version=$3 ldflags=$4 gobin
  [[ -x "$out/$name" ]] && return 0
  gobin="$(mktemp -d)"
  t=$(date +%s)
  (cd /tmp && GOFLAGS= GOBIN="$gobin" go install -trimpath -ldflags "-s -w $ldflags" "$pkg@$version")
  mv "$gobin/$name" "$out/$name"
  rmdir "$gobin"
  echo "built $name in $(( $(date +%s) - t ))s" >&2
}
# The pod sandbox's init process, static: it is the only file of the pause image.
if [[ ! -x "$out/pause" ]]; then
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/pause.tmp" ./cmd/pause
  mv "$out/pause.tmp" "$out/pause"
fi

install_tool kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
install_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"

install_tool coredns github.com/coredns/coredns "$COREDNS_VERSION" \
  "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"

install_tool crictl sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION" \
  "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"

install_tool minio github.com/minio/minio "$MINIO_VERSION" \
  "-X github.com/minio/minio/cmd.Version=$MINIO_VERSION"

install_tool kueue sigs.k8s.io/kueue/cmd/kueue "$KUEUE_VERSION" \
  "-X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION"
# The release's CRDs and webhook rules, from the same module the binary was built from.
if [[ ! -s "$out/kueue-release/webhooks.yaml" ]]; then
  kueue_src="$(cd /tmp && GOFLAGS= go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  rm -rf "$out/kueue-release" && mkdir -p "$out/kueue-release/crds"
  cp "$kueue_src"/config/components/crd/bases/*.yaml "$out/kueue-release/crds/"
  cp "$kueue_src/config/components/webhook/manifests.yaml" "$out/kueue-release/webhooks.yaml.tmp"
  mv "$out/kueue-release/webhooks.yaml.tmp" "$out/kueue-release/webhooks.yaml"
fi

echo "control-plane binaries ready in $(( $(date +%s) - start ))s" >&2
echo "$out"
