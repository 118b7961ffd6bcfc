#!/bin/sh
# Runs after the links are made, in the profile's directory, with AGENTENV_PROFILE and HOME set.
# Its output goes to agentenv's stderr. Keep it idempotent: it runs on every activation that
# changes something.
set -eu
mkdir -p "$HOME/.cache/nvim"
