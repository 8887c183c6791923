#!/usr/bin/env bash
# Installs, with apt-get, the Debian 12 packages Cloister needs that are
# missing.  Idempotent and quick when everything is present.  Usage:
#   scripts/install-deps.sh [build|test|bench|all]     (default: all)
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config libssl-dev openssl libxxhash-dev
            libjansson-dev libseccomp-dev libhttp-parser-dev
            wabt clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
test_pkgs=(python3 python3-pymemcache memcached libmemcached-tools
           clang-14 libclang-rt-14-dev procps spin)
bench_pkgs=(memcached gnuplot-nox iproute2 nodejs wrk nginx etcd-server etcd-client)

case "${1:-all}" in
  build) want=("${build_pkgs[@]}") ;;
  test)  want=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  bench) want=("${build_pkgs[@]}" "${bench_pkgs[@]}") ;;
  all)   want=("${build_pkgs[@]}" "${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 [build|test|bench|all]" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
# The memcached and etcd packages may start a system instance; Cloister's tests and
# benchmarks start their own on free ports and never use it.
