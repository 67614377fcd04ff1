"""Serves a GGUF model with llama.cpp's HTTP server (the xllamacpp wheel) on 127.0.0.1.

usage: serve.py MODEL.gguf PORT CHAT_TEMPLATE.jinja

The server runs in this process and answers until the process is terminated (SIGTERM).
"""
import signal
import sys
import threading

import xllamacpp


def main() -> None:
    model, port, template = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = {"smollm2:135m"}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = 8192
    params.n_parallel = 2
    params.use_jinja = True
    with open(template, encoding="utf-8") as f:
        params.chat_template = f.read()
    params.cpuparams.n_threads = 2
    params.cpuparams_batch.n_threads = 2
    params.warmup = False
    server = xllamacpp.Server(params)
    print(f"serving {model} on {server.listening_address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    del server


if __name__ == "__main__":
    main()
