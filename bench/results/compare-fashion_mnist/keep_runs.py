"""Keep each finished run of the comparison here the minute it finishes: its config, its store (one file,
copied with SQLite's backup so a store that is still open is copied whole) and its `compare.json`, one
commit a run. Usage, from the repository root, beside the running comparison:

    python3 bench/results/compare-fashion_mnist/keep_runs.py /tmp/cmp-fm &
"""

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

here = Path(__file__).resolve().parent
source = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/cmp-fm")
while True:
    for run in sorted(source.glob("*-s*")):
        marker, kept = run / "compare.json", here / run.name
        if kept.exists() or not marker.exists() or not json.loads(marker.read_text()).get("finished"):
            continue
        kept.mkdir()
        shutil.copy(run / "config.yaml", kept / "config.yaml")
        with sqlite3.connect(f"file:{run / 'store.sqlite'}?mode=ro", uri=True) as src, \
                sqlite3.connect(kept / "store.sqlite") as dst:
            src.backup(dst)
        with sqlite3.connect(kept / "store.sqlite") as dst:
            dst.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        shutil.copy(marker, kept / "compare.json")
        subprocess.run(["git", "add", str(kept)], cwd=here, check=True)
        subprocess.run(["git", "commit", "-q", "-m", f"bench/results: issue 8's fashion_mnist comparison, run "
                        f"{run.name} (store, config, marker)", "--", str(kept)], cwd=here, check=True)
        print(time.strftime("%H:%M:%S"), "kept", run.name, flush=True)
    time.sleep(20)
