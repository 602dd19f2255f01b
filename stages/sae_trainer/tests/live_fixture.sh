#!/bin/sh
# Regenerates the PyTorch fixture with the live torch and checks the C trainer against it.
#   live_fixture.sh tools/sae_reference.py test_sae_fixture
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "SKIP: /usr/bin/python3 has no torch"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 "$1" fixture "$tmp/fixture.safetensors" && "$2" "$tmp/fixture.safetensors"
