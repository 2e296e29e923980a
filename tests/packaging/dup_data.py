"""A program with duplicate data, for the packaging tests.

    python3 dup_data.py [--hold]

Holds 8 copies of 4 MiB of random bytes until libdedup says it has merged at
least 4096 pages of them: the stats file it names in DEDUP_STATS_FILE, which
DEDUP_STATS_INTERVAL_MS keeps fresh, shows pages_sharing >= 4096. Then it
checks every copy byte for byte, prints "merged pages_sharing=N", and exits 0
(with --hold, only once its stdin is closed). Exits 3 if nothing merged
within 60 s, 4 if a copy differs.
"""
import json
import os
import sys
import time

NEED = 4096

data = os.urandom(4 << 20)
copies = [bytearray(data) for _ in range(8)]
path = os.environ.get("DEDUP_STATS_FILE", "")
deadline = time.time() + 60
sharing = 0
while time.time() < deadline:
    try:
        with open(path) as f:
            sharing = json.load(f).get("pages_sharing", 0)
    except (OSError, ValueError):
        sharing = 0
    if sharing >= NEED:
        break
    time.sleep(0.1)
else:
    print("not merged: pages_sharing=%d after 60 s (stats file %r)" % (sharing, path), flush=True)
    sys.exit(3)
if any(c != data for c in copies):
    print("a copy differs", flush=True)
    sys.exit(4)
print("merged pages_sharing=%d" % sharing, flush=True)
if "--hold" in sys.argv:
    sys.stdin.read()
