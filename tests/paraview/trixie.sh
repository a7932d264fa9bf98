#!/usr/bin/env bash
# Today's ParaView for the tests: Debian trixie's paraview (5.13, built with ADIOS2) in a chroot, since Debian 12
# packages only 5.11 (no VTX/BP reader, no transient VTKHDF) and trixie's build needs glibc 2.38.
#
#   trixie.sh build [DIR]                      make the chroot once (root; about 3 min and 2.2 GB from deb.debian.org)
#   trixie.sh run DIR BIND... -- COMMAND...    run COMMAND in the chroot with /proc, /dev and each BIND folder mounted
#                                              at its own path (private mounts, gone when COMMAND ends)
#
# DIR defaults to $ISOLIMB_PARAVIEW_CHROOT, else .cache/paraview-trixie in the repository (ignored by git). A finished
# build leaves DIR/.isolimb-ready; a second build is a no-op. Build output goes to DIR.log (the tests quote it).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:-}
shift || true

case "$cmd" in
build)
  dir=$(realpath -m "${1:-${ISOLIMB_PARAVIEW_CHROOT:-$here/.cache/paraview-trixie}}")
  if [ -f "$dir/.isolimb-ready" ]; then
    echo "ParaView chroot ready: $dir ($(cat "$dir/.isolimb-ready"))"
    exit 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "trixie.sh build: needs root (mmdebstrap makes a chroot with device files)" | tee "$dir.log" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$dir")"
  {
    command -v mmdebstrap > /dev/null || {
      export DEBIAN_FRONTEND=noninteractive
      apt-get install -y -qq --no-install-recommends mmdebstrap \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends mmdebstrap; }
    }
    rm -rf "$dir.tmp"
    start=$(date +%s)
    mmdebstrap --variant=apt --include=paraview,python3-paraview,xvfb,xauth trixie "$dir.tmp" \
      http://deb.debian.org/debian
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
    version=$(chroot "$dir" pvbatch --version 2>/dev/null | grep -m1 -i "paraview version" || echo "paraview version unknown")
    echo "$version, built $(date -u +%FT%TZ) in $(($(date +%s) - start)) s" > "$dir/.isolimb-ready"
    cat "$dir/.isolimb-ready"
  } > "$dir.log" 2>&1 || {
    echo "trixie.sh build: failed; see $dir.log:" >&2
    tail -n 20 "$dir.log" >&2
    exit 1
  }
  echo "ParaView chroot ready: $dir ($(cat "$dir/.isolimb-ready"))"
  ;;
run)
  dir=$(realpath -m "$1")
  shift
  binds=()
  while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    binds+=("$(realpath -m "$1")")
    shift
  done
  [ "${1:-}" = "--" ] && shift
  [ -f "$dir/.isolimb-ready" ] || { echo "trixie.sh run: no ParaView chroot at $dir (trixie.sh build)" >&2; exit 1; }
  # a private mount namespace: the bind mounts vanish with the command, nothing is left mounted on the host
  exec unshare --mount --propagation private bash -c '
    set -e
    dir=$1; shift
    mount --rbind /dev "$dir/dev"
    mount -t proc proc "$dir/proc"
    while [ "$1" != "--" ]; do mkdir -p "$dir$1"; mount --bind "$1" "$dir$1"; shift; done
    shift
    exec chroot "$dir" env -i PATH=/usr/bin:/bin HOME=/tmp LANG=C.UTF-8 "$@"
  ' bash "$dir" "${binds[@]}" -- "$@"
  ;;
*)
  echo "usage: trixie.sh build [DIR] | trixie.sh run DIR BIND... -- COMMAND..." >&2
  exit 2
  ;;
esac
