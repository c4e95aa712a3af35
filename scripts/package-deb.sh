#!/usr/bin/env bash
# Builds the Debian packages autoenroll-server and autoenroll-agent with dpkg-deb (no other
# tool): binaries, systemd units, a default configuration in /etc/autoenroll, docs, man pages,
# maintainer scripts that create the service user and directories.
#
#   scripts/package-deb.sh [--out DIR] [--bin-dir DIR] [--compress xz|gzip]
#
# Without --bin-dir the release binaries are built first (cargo build --release). Prints the
# paths of the packages it wrote.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/deb
bin_dir=""
compress=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --compress) compress="$2"; shift 2 ;;
    *) echo "usage: $0 [--out DIR] [--bin-dir DIR] [--compress xz|gzip]" >&2; exit 2 ;;
  esac
done
if [ -z "$bin_dir" ]; then
  cargo build --release --locked -p autoenroll-cli --bins
  # The agent built small (profile `agent`: size-optimised, LTO, panic=abort).
  cargo build --profile agent --locked -p autoenroll-agent-bin
  bin_dir=target/release
  agent_bin_dir=target/agent
fi
agent_bin_dir=${agent_bin_dir:-$bin_dir}
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is needed: apt-get install -y dpkg" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# package NAME BINARY UNIT CONFIG DEPENDS DESCRIPTION DOCS...
package() {
  local name=$1 binary=$2 unit=$3 config=$4 depends=$5 description=$6
  shift 6
  local root="$work/$name"
  install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/autoenroll" \
    "$root/usr/share/doc/$name" "$root/usr/share/man/man1"
  local from=$bin_dir
  [ "$binary" = autoenroll-agent ] && from=$agent_bin_dir
  install -m 0755 "$from/$binary" "$root/usr/bin/$binary"
  install -m 0644 "packaging/systemd/$unit" "$root/lib/systemd/system/$unit"
  install -m 0644 "packaging/etc/$config" "$root/etc/autoenroll/$config"
  for doc in "$@"; do
    install -m 0644 "$doc" "$root/usr/share/doc/$name/$(basename "$doc")"
  done
  install -m 0644 LICENSE "$root/usr/share/doc/$name/copyright" 2>/dev/null ||
    printf 'autoenroll\nLicense: Apache-2.0\n' > "$root/usr/share/doc/$name/copyright"
  # Man pages generated from the command-line definitions.
  "$from/$binary" man --out "$root/usr/share/man/man1" >/dev/null
  if [ "$binary" = autoenroll ]; then
    # `autoenroll agent ...` pages would clash with the agent package's own autoenroll-agent*.1.
    rm -f "$root"/usr/share/man/man1/autoenroll-agent*.1
  fi
  gzip -9n "$root"/usr/share/man/man1/*.1
  for script in postinst prerm postrm; do
    install -m 0755 "packaging/debian/${name#autoenroll-}/$script" "$root/DEBIAN/$script"
  done
  echo "/etc/autoenroll/$config" > "$root/DEBIAN/conffiles"
  local size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat > "$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: autoenroll developers <autoenroll@localhost>
Installed-Size: $size
Depends: $depends
Section: admin
Priority: optional
Homepage: https://github.com/autoenroll/autoenroll
Description: $description
CONTROL
  dpkg-deb --root-owner-group -Z"$compress" --build "$root" "$out/${name}_${version}_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}_${arch}.deb"
}

package autoenroll-server autoenroll autoenroll-server.service server.toml "libc6, adduser" \
  "certificate autoenrollment server: CA, MS-XCEP/MS-WSTEP, Windows MDM, SCEP
 A certificate authority with templates, an enrollment policy service (MS-XCEP), an enrollment
 service (MS-WSTEP), Windows MDM enrollment (MS-MDE2), a SCEP server (RFC 8894), a device
 inventory that decides renewals server-side, revocation (CRL, OCSP), an admin API, a web
 console and Prometheus metrics." \
  README.md docs/deployment.md docs/configuration.md docs/windows.md
package autoenroll-agent autoenroll-agent autoenroll-agent.service agent.toml "libc6" \
  "certificate autoenrollment agent
 Reads enrollment policy (MS-XCEP), enrolls what is missing (MS-WSTEP), renews at the server's
 renewal time, retries until expiry, swaps keys and certificates atomically and runs hooks." \
  docs/linux.md
