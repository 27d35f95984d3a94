"""Is this network new? Exact duplicates by normalized-code hash, near-duplicates by MinHash LSH.

NNGPT dedups by whitespace-normalized MD5 and admits novel architectures through a MinHash-Jaccard
filter; this does both, over canonical code (comments, docstrings and formatting removed), and says
which earlier candidate a new one is closest to and how close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from datasketch import MinHash, MinHashLSH

from nngpt_ray.source import code_hash, code_tokens


@dataclass(frozen=True)
class Verdict:
    kind: Literal["new", "duplicate", "near_duplicate"]
    similar_to: str | None = None  # the most similar earlier candidate, if any
    similarity: float | None = None  # estimated Jaccard similarity to it (1.0 for an exact duplicate)


class Deduplicator:
    def __init__(self, threshold: float = 0.9, num_perm: int = 128, shingle: int = 3) -> None:
        self.threshold, self.num_perm, self.shingle = threshold, num_perm, shingle
        # LSH only proposes candidates (banding needs a threshold it can resolve, <= 0.9); the verdict
        # compares the estimated Jaccard similarity against the configured threshold.
        self.lsh = MinHashLSH(threshold=min(threshold, 0.9), num_perm=num_perm)
        self.exact: dict[str, str] = {}  # code hash -> first candidate id
        self.ids: list[str] = []
        self._signatures: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def sketch(self, code: str) -> MinHash:
        tokens = code_tokens(code)
        grams = {" ".join(tokens[i:i + self.shingle]) for i in range(max(1, len(tokens) - self.shingle + 1))}
        m = MinHash(num_perm=self.num_perm)
        m.update_batch([g.encode() for g in grams])
        return m

    def check(self, candidate_id: str, code: str) -> Verdict:
        """Judge `code`; a new one is remembered, duplicates are not."""
        verdict, h, sketch = self._judge(code)
        if verdict.kind == "new":
            self._add(candidate_id, h, sketch)
        return verdict

    def peek(self, code: str) -> Verdict:
        """Judge `code` without remembering it (the activation gate's samples are not candidates)."""
        return self._judge(code)[0]

    def _judge(self, code: str) -> tuple[Verdict, str, MinHash | None]:
        h = code_hash(code)
        if h in self.exact:
            return Verdict("duplicate", self.exact[h], 1.0), h, None
        sketch = self.sketch(code)
        hits = self.lsh.query(sketch)
        if hits:
            index = {cid: i for i, cid in enumerate(self.ids)}
            best = max(hits, key=lambda cid: self._similarity(sketch, index[cid]))
            similarity = self._similarity(sketch, index[best])
            if similarity >= self.threshold:
                return Verdict("near_duplicate", best, round(similarity, 4)), h, sketch
        nearest, similarity = self._nearest(sketch)
        return Verdict("new", nearest, None if similarity is None else round(similarity, 4)), h, sketch

    def remember(self, candidate_id: str, code: str) -> None:
        """Add an already-judged candidate (rebuilding from the store)."""
        h = code_hash(code)
        if h not in self.exact and candidate_id not in self.lsh:
            self._add(candidate_id, h, self.sketch(code))

    def _add(self, candidate_id: str, h: str, sketch: MinHash) -> None:
        self.exact[h] = candidate_id
        self.lsh.insert(candidate_id, sketch)
        self.ids.append(candidate_id)
        self._signatures.append(sketch.hashvalues)
        self._matrix = None

    def _similarity(self, sketch: MinHash, i: int) -> float:
        return float(np.mean(self._signatures[i] == sketch.hashvalues))

    def _nearest(self, sketch: MinHash) -> tuple[str | None, float | None]:
        if not self.ids:
            return None, None
        if self._matrix is None:
            self._matrix = np.stack(self._signatures)
        scores = (self._matrix == sketch.hashvalues).mean(axis=1)
        i = int(scores.argmax())
        return self.ids[i], float(scores[i])


def mean_pairwise_similarity(codes: list[str], num_perm: int = 128, shingle: int = 3) -> float | None:
    """Mean estimated Jaccard similarity over all pairs of `codes` (1.0: all alike; lower: more diverse)."""
    if len(codes) < 2:
        return None
    index = Deduplicator(num_perm=num_perm, shingle=shingle)
    signatures = np.stack([index.sketch(c).hashvalues for c in codes])
    total, pairs = 0.0, 0
    for i in range(len(codes) - 1):
        total += float((signatures[i + 1:] == signatures[i]).mean(axis=1).sum())
        pairs += len(codes) - 1 - i
    return total / pairs
