#!/usr/bin/env bash
# The GPU runner's prerequisites and build; idempotent, called by .ci/run.
# - a Vulkan loader and Mesa's drivers (lavapipe: a software Vulkan device, so CI needs no GPU)
# - gvpie-runner built in release mode, into $CARGO_TARGET_DIR (default ~/.cache/gvpie-target:
#   outside the checkout, so every fresh clone rebuilds incrementally), then the crate's unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/gvpie-target}"

need=()
for pkg in mesa-vulkan-drivers libvulkan1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

# rustup puts cargo in ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "gpu_setup: cargo not found; install Rust >= 1.87 (https://rustup.rs) to build rust_runner/" >&2
  exit 1
fi

manifest=rust_runner/Cargo.toml
cargo build --release --locked --manifest-path "$manifest"
cargo test --release --locked --manifest-path "$manifest"
"$CARGO_TARGET_DIR/release/gvpie-runner" info
