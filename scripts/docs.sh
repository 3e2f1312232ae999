#!/usr/bin/env bash
# Builds the user guide (mdBook) into docs/book.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
command -v mdbook >/dev/null 2>&1 || cargo install mdbook --locked --version "^0.5"
mdbook build docs
echo "docs: built docs/book/index.html"
