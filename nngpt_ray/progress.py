"""Live progress of `nngpt run`: a table on a terminal, one line every 15 s otherwise (job logs)."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nngpt_ray.report import cycle_rows


class Progress:
    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.console, self.enabled = console, enabled
        self.live = Live(console=console, refresh_per_second=2, transient=True) if enabled and console.is_terminal else None
        self.last_line = 0.0

    def __enter__(self) -> Progress:
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)

    def update(self, snap: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.live:
            self.live.update(self._render(snap))
        elif time.monotonic() - self.last_line >= 15:
            self.last_line = time.monotonic()
            rows = {r["cycle"]: r for r in cycle_rows(snap["stats"])}
            c = rows.get(snap["cycle"], {})
            self.console.print(
                f"[{snap['elapsed']:5.0f} s] cycle {snap['cycle']}/{snap['cycles'] - 1} adapter v{snap['adapter']}: "
                f"generated {c.get('generated', 0)}, valid {c.get('valid', 0)}, unique {c.get('unique', 0)}, "
                f"trained {c.get('trained', 0)}; queue {snap['queue']}, training {snap['training']}/{snap['trainers']}"
                f"{', learner busy' if snap['learning'] else ''}")

    @staticmethod
    def _render(snap: dict[str, Any]):
        table = Table(title=f"nngpt run  {snap['elapsed']:.0f} s", expand=False)
        for name in ("cycle", "generated", "valid", "unique", "trained", "best acc"):
            table.add_column(name, justify="right")
        for c in cycle_rows(snap["stats"]):
            best = "-" if c["best_accuracy"] is None else f"{100 * c['best_accuracy']:.1f}%"
            table.add_row(str(c["cycle"]), str(c["generated"]), str(c["valid"]), str(c["unique"]), str(c["trained"]),
                          best)
        state = (f"cycle {snap['cycle']}/{snap['cycles'] - 1}, adapter v{snap['adapter']}, queue {snap['queue']}, "
                 f"training {snap['training']}/{snap['trainers']}, learner {'busy' if snap['learning'] else 'idle'}")
        return Group(table, Text(state), *[Text(f"  {e}", style="dim") for e in snap["events"]])
