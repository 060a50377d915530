#!/usr/bin/env bash
# Installs Mesa's software Vulkan driver (lavapipe) and the Vulkan loader, so the GPU backend's
# parity tests run on a machine without a GPU. Debian/Ubuntu, as root, non-interactive.
# Idempotent: does nothing when the lavapipe ICD is already installed.
set -euo pipefail
if ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1 && ldconfig -p | grep -q libvulkan.so.1; then
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1
