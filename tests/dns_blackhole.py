"""Runs in a private user, network and mount namespace (see test_dns.py): a DNS server that never
answers, the real watcher polling a host name it is asked about, and a SIGTERM once the lookup
hangs. Prints one JSON line: the watcher's exit code, the seconds it took to exit, and the names of
the events it wrote."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

RESOLV_CONF, CONFIG = sys.argv[1], sys.argv[2]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["mount", "--bind", RESOLV_CONF, "/etc/resolv.conf"], check=True)
asked = threading.Event()


def swallow() -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 53))
    while True:
        server.recvfrom(4096)
        asked.set()


threading.Thread(target=swallow, daemon=True).start()
watcher = subprocess.Popen(
    [sys.executable, "-m", "watcher", "run", "--config", CONFIG],
    stdout=subprocess.PIPE,
    env={**os.environ, "ZOHO_ACCESS_TOKEN": "1000.a-token-for-no-server"},
)
if not asked.wait(20):
    watcher.kill()
    sys.exit("the watcher never asked the DNS server")
stopped = time.monotonic()
watcher.send_signal(signal.SIGTERM)
try:
    said, _ = watcher.communicate(timeout=30)
    code = watcher.returncode
except subprocess.TimeoutExpired:
    watcher.kill()
    said, code = b"", None
exit_s = time.monotonic() - stopped
events = [json.loads(line)["event"] for line in said.splitlines()]
print(json.dumps({"exit_code": code, "exit_s": exit_s, "events": events}))
