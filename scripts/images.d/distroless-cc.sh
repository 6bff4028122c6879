# The recipe of the local stand-in for gcr.io/distroless/cc-debian12:nonroot, sourced by
# scripts/images (which has sourced scripts/lib.sh). No image registry is reachable here, so the
# runtime base is made from the distribution's own packages: `apt-get download` of what
# distroless' cc image holds, unpacked with `dpkg -x` (no maintainer scripts run, so no shell is
# needed or shipped), plus the few files distroless writes itself. The image is labelled with
# a hash of this file and of the package versions: scripts/images rebuilds it only when either
# changes.
#
# distroless cc-debian12 = static (base-files, netbase, tzdata, the CA bundle, passwd/group with
# nonroot 65532, nsswitch.conf, /tmp) + base (libc6, libssl3) + cc (libgcc-s1, libgomp1,
# libstdc++6). The binaries are built on this host, so the host's release is the right one: on
# Debian 12 that is exactly the release distroless/cc-debian12 is made from. Elsewhere (an
# Ubuntu CI runner) the image matches the host's glibc instead and is tagged after it.

# One entry per package; "a|b" takes the first name the host's apt knows (Ubuntu 24.04 renamed
# libssl3 to libssl3t64).
BASE_PKGS=(base-files netbase tzdata ca-certificates libc6 "libssl3|libssl3t64" libgcc-s1 libgomp1 libstdc++6)

base_image_name() {
  local id version
  id=$(. /etc/os-release && echo "${ID:-linux}")
  version=$(. /etc/os-release && echo "${VERSION_ID:-0}")
  echo "localhost/distroless-cc:${id}${version%%.*}"
}

# "name=version" of each package as apt would download it (the candidate), one per line.
base_pkg_versions() {
  local entry name found policy
  # One apt-cache call for all of them (each call reads the whole package cache).
  policy=$(apt-cache policy ${BASE_PKGS[*]//|/ } 2>/dev/null |
    awk '/^[^ ]/ {sub(":$", ""); p=$1} /Candidate:/ && $2 != "(none)" {print p "=" $2}')
  for entry in "${BASE_PKGS[@]}"; do
    found=
    for name in ${entry//|/ }; do
      found=$(grep -m1 "^$name=" <<<"$policy") && break
    done
    [ -n "$found" ] || return 1
    echo "$found"
  done
}

# The .deb files of the recipe in DIR (cached: a version already there is not fetched again).
# apt-get download first (the host's own mirror); debootstrap --download-only as the fallback.
base_fetch_debs() { # base_fetch_debs DIR VERSIONS_FILE
  local dir=$1 versions=$2 pv missing=()
  mkdir -p "$dir"
  while read -r pv; do
    ls "$dir/${pv%%=*}_"*"$(printf '%s' "${pv#*=}" | sed 's/^[0-9]*://')"_*.deb >/dev/null 2>&1 || missing+=("$pv")
  done <"$versions"
  [ ${#missing[@]} -eq 0 ] && return 0
  log "base image: downloading ${missing[*]}"
  if (cd "$dir" && apt-get download -qq "${missing[@]}" >/dev/null 2>&1); then return 0; fi
  log "base image: apt-get download failed; trying debootstrap --download-only (slower)"
  ensure_pkgs debootstrap:debootstrap
  local mirror suite tmp
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
  tmp=$(mktemp -d)
  as_root debootstrap --download-only --variant=minbase \
    --include="$(sed 's/=.*//' "$versions" | paste -sd, -)" "$suite" "$tmp" "${mirror:-http://deb.debian.org/debian}" >/dev/null ||
    { as_root rm -rf "$tmp"; die "base image: neither apt-get download nor debootstrap could fetch the packages"; }
  while read -r pv; do cp "$tmp"/var/cache/apt/archives/"${pv%%=*}"_*.deb "$dir/"; done <"$versions"
  as_root rm -rf "$tmp"
}

# Unpacks the packages into ROOTFS and adds what distroless itself writes.
base_make_rootfs() { # base_make_rootfs ROOTFS DEB_DIR VERSIONS_FILE
  local root=$1 debs=$2 versions=$3 pv deb
  rm -rf "$root"; mkdir -p "$root"
  while read -r pv; do
    deb=$(ls -t "$debs/${pv%%=*}_"*"$(printf '%s' "${pv#*=}" | sed 's/^[0-9]*://')"_*.deb | head -n1)
    dpkg-deb -x "$deb" "$root"
  done <"$versions"

  # What update-ca-certificates would make (maintainer scripts do not run under dpkg -x).
  mkdir -p "$root/etc/ssl/certs"
  find "$root/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat >"$root/etc/ssl/certs/ca-certificates.crt"
  [ -s "$root/etc/ssl/certs/ca-certificates.crt" ] || die "base image: empty CA bundle"

  # distroless' users and groups (nonroot = 65532) and name service switch.
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
tty:x:5:
staff:x:50:
nobody:x:65534:
nonroot:x:65532:
EOF
  cat >"$root/etc/nsswitch.conf" <<'EOF'
passwd:         files
group:          files
shadow:         files
gshadow:        files
hosts:          files dns
networks:       files
protocols:      files
services:       files
ethers:         files
rpc:            files
EOF
  mkdir -p "$root/tmp" "$root/root" "$root/home/nonroot"
  chmod 1777 "$root/tmp"; chmod 700 "$root/root" "$root/home/nonroot"
  chown 65532:65532 "$root/home/nonroot"

  # Documentation goes, the licences stay (as in distroless).
  find "$root/usr/share/doc" -mindepth 2 ! -name copyright -exec rm -rf {} + 2>/dev/null || true
  rm -rf "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/lintian" "$root/usr/share/bug" \
    "$root/usr/share/ca-certificates" "$root/usr/sbin" "$root/etc/init.d" "$root/etc/cron.daily" \
    "$root/etc/update-motd.d"
  # Nothing to run but the application: no shell, no programs at all (a release's base-files
  # may bring a helper, e.g. Ubuntu's locale-check: it goes, as in distroless).
  local progs
  progs=$(find "$root" \( -path "$root/usr/lib" -o -path "$root/lib" -o -path "$root/lib64" \) -prune -o -type f -perm /111 -print)
  if [ -n "$progs" ]; then
    log "base image: removing programs the packages brought: ${progs//$root/}"
    rm -f $progs
  fi
}

# Builds the base image NAME unless an image of that name already carries LABEL_HASH.
build_base_image() { # build_base_image NAME
  local name=$1 cache="${XDG_CACHE_HOME:-$HOME/.cache}/frequency-tickets/distroless"
  local versions hash have
  mkdir -p "$cache"
  versions="$cache/versions"
  if ! base_pkg_versions >"$versions"; then
    as_root apt-get update -qq
    base_pkg_versions >"$versions" || die "base image: apt knows none of ${BASE_PKGS[*]}"
  fi
  hash=$(cat "${BASH_SOURCE[0]}" "$versions" | sha256sum | cut -c1-16)
  have=$(bh inspect --type image --format '{{index .ImageAnnotations "tickets.recipe"}}' "$name" 2>/dev/null || true)
  if [ "$have" = "$hash" ]; then
    BASE_STATUS="cached ($hash)"
    return 0
  fi
  local t0=$SECONDS root="$cache/rootfs"
  log "base image $name: building (recipe $hash)"
  base_fetch_debs "$cache/debs" "$versions"
  base_make_rootfs "$root" "$cache/debs" "$versions"
  local ctr mnt
  ctr=$(bh from --pull=never scratch)
  mnt=$(bh mount "$ctr")
  as_root cp -a "$root/." "$mnt/"
  bh umount "$ctr" >/dev/null
  # distroless' :nonroot configuration.
  bh config --user 65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --annotation "tickets.recipe=$hash" \
    --label "org.opencontainers.image.description=local stand-in for gcr.io/distroless/cc-debian12:nonroot ($(paste -sd' ' "$versions"))" \
    "$ctr"
  bh rmi "$name" >/dev/null 2>&1 || true
  bh commit --quiet --rm "$ctr" "$name" >/dev/null
  rm -rf "$root"
  BASE_STATUS="built in $((SECONDS - t0)) s ($hash)"
}
