#!/usr/bin/env bash
# Set up unas_lightning on a fresh Debian machine, from the repository root or anywhere:
#   bash scripts/setup.sh        # the package, into .venv
#   bash scripts/setup.sh test   # the package with its test extra
# Installs the offline Fashion-MNIST data set (Debian's dataset-fashion-mnist) and Python's venv module
# through apt when they are missing (as root, or through sudo), then creates .venv and installs the
# package into it in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
[[ "${1:-}" == "test" ]] && extra="[test]"

apt_packages=()
[[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] || apt_packages+=(dataset-fashion-mnist)
python3 -c "import ensurepip, venv" 2>/dev/null || apt_packages+=(python3-venv python3-pip)
if ((${#apt_packages[@]})); then
  sudo=""
  [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  echo "setup: apt-get install ${apt_packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
echo "setup: pip install -e .${extra} (torch is pinned to <=2.14.1)"
.venv/bin/python -m pip install -q -e ".${extra}"
echo "setup: done; the CLI is .venv/bin/unas-cli"
