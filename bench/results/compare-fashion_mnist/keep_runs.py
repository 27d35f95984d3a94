"""Keep each finished run of the comparison here the minute it finishes: its config, its store (one file,
copied with SQLite's backup so a store that is still open is copied whole) and its `compare.json`, one
commit a run. "Finished" is `nngpt compare`'s own test (`baselines.compare.finished`), so run it with the
comparison's interpreter, from the repository root, beside the running comparison:

    /tmp/nngpt-32fd042/.venv/bin/python bench/results/compare-fashion_mnist/keep_runs.py /tmp/cmp-fm &
"""

import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from nngpt_ray.baselines.compare import finished
from nngpt_ray.rundir import RunDir

here = Path(__file__).resolve().parent
source = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/cmp-fm")
while True:
    for run in map(RunDir, sorted(source.glob("*-s*"))):
        kept = RunDir(here / run.root.name)
        if kept.root.exists() or not finished(run):
            continue
        kept.root.mkdir()
        shutil.copy(run.config, kept.config)
        with closing(sqlite3.connect(f"file:{run.store}?mode=ro", uri=True)) as src, \
                closing(sqlite3.connect(kept.store)) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        shutil.copy(run.root / "compare.json", kept.root / "compare.json")
        subprocess.run(["git", "add", str(kept.root)], cwd=here, check=True)
        subprocess.run(["git", "commit", "-q", "-m", f"bench/results: issue 8's fashion_mnist comparison, run "
                        f"{run.root.name} (store, config, marker)", "--", str(kept.root)], cwd=here, check=True)
        print(time.strftime("%H:%M:%S"), "kept", run.root.name, flush=True)
    time.sleep(20)
