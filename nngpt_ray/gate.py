"""The activation gate: a new adapter goes live only if it does not make the model repeat itself.

Before a staged adapter is switched in, a fixed set of prompts (built once per run from the seeds) is
sampled with it, with the active adapter and with the base model, with the same sampling seed. Each completion is judged as the
loop judges it: it parses (a valid candidate) and it is new (not a duplicate of anything in the store, nor
of an earlier completion of the same sample). The new adapter is activated only if its novel yield does
not fall below the reference's (the better of the active adapter and the base model) by more than
`tolerance`. The measurements and the decision are recorded with the adapter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateSample:
    prompts: int
    parsed: int
    novel: int

    @property
    def parse_rate(self) -> float:
        return self.parsed / self.prompts if self.prompts else 0.0

    @property
    def novel_yield(self) -> float:
        return self.novel / self.prompts if self.prompts else 0.0

    def as_dict(self) -> dict:
        return asdict(self) | {"parse_rate": round(self.parse_rate, 4), "novel_yield": round(self.novel_yield, 4)}


def judge(kinds: list[str]) -> GateSample:
    """`kinds`: per completion "invalid", "duplicate" or "new" (new only once per identity)."""
    return GateSample(prompts=len(kinds), parsed=sum(k != "invalid" for k in kinds), novel=kinds.count("new"))


def decide(staged: GateSample, active: GateSample, tolerance: float) -> tuple[bool, str]:
    floor = active.novel_yield - tolerance
    verdict = (f"novel yield {staged.novel_yield:.2f} vs {active.novel_yield:.2f} for the reference "
               f"(parse rate {staged.parse_rate:.2f} vs {active.parse_rate:.2f}; tolerance {tolerance:g})")
    return staged.novel_yield >= floor - 1e-9, verdict
