#!/usr/bin/env bash
# Installs what moe needs to build and test on Debian 12 (run as root).
# Skips apt when everything is already there, so repeated runs are quick.
set -euo pipefail
packages=(build-essential cmake ninja-build pkg-config libcmocka-dev libjson-c-dev libpcre2-dev libutf8proc-dev
          libmicrohttpd-dev curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
