#!/usr/bin/env bash
# Installs the system packages webtune's tests need: a Vulkan driver (Mesa's lavapipe
# runs wgpu on the CPU where there is no GPU) and the wasm32 target for the browser build.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need+=(libvulkan1)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if command -v rustup >/dev/null 2>&1; then
  rustup target list --installed | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
fi
