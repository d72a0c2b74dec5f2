#!/usr/bin/env bash
# Makes sure the Debian packages named on the command line are installed.
#   scripts/debian-packages.sh podman mmdebstrap runc
# Idempotent: packages already installed (dpkg -s) cost nothing, and `apt-get update` runs only
# when something is missing. On Debian as root the missing ones are installed with apt-get; on
# any other system (or without root) it stops with an error that names them.
set -euo pipefail
if [[ $# -eq 0 ]]; then
	echo "usage: scripts/debian-packages.sh PACKAGE..." >&2
	exit 2
fi

missing=()
for pkg in "$@"; do
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$pkg")
	fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
	echo "error: these packages are needed and this is not a Debian system (no apt-get):" \
		"${missing[*]}; install them with your system's package manager and retry." >&2
	exit 1
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "error: these Debian packages are needed: ${missing[*]}; install them as root:" \
		"apt-get update && apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
