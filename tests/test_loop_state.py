"""The loop's decisions as a pure state machine: quotas, cycles, adapters, when to learn. No Ray, no model."""

from __future__ import annotations

from nngpt_ray.config import load_config
from nngpt_ray.failures import FailureKind
from nngpt_ray.loop import Advance, Budget, Learn, Loop, Note
from nngpt_ray.spec import CandidateSpec, EpochResult, EvalResult, Origin
from nngpt_ray.store import Store


def make(seed: int = 0, **kw) -> Loop:
    return Loop(Budget(**({"cycles": 3, "per_cycle": 4, "max_generations_per_cycle": 20, "every_k": 2} | kw)),
                seed=seed)


def fill(loop: Loop, kinds: list[str], size: int = 4) -> tuple[list[str], list]:
    """Issue one batch and admit it with these outcomes; returns the new ids and the actions."""
    batch = loop.next_batch(size)
    assert batch is not None and batch.size == len(kinds)
    new = [f"c{batch.index + i}" for i, k in enumerate(kinds) if k == "new"]
    return new, loop.admitted(batch, kinds, new)


def test_batches_ask_for_the_open_quota_over_the_novel_yield_and_wait_for_what_is_in_flight():
    loop = make(per_cycle=4, max_generations_per_cycle=40)
    first = loop.next_batch(6)  # a quota of 4 at the prior yield of 1/2 wants 8: no more than the batch size
    assert (first.cycle, first.adapter, first.size, first.index) == (0, 0, 6, 0)
    assert loop.next_batch(6) is None and not loop.can_generate()  # 6 in flight could fill it: wait
    loop.admitted(first, ["new", "invalid", "duplicate", "invalid", "duplicate", "invalid"], ["a"])
    second = loop.next_batch(20)  # 3 short at a yield of (1 + 1) / (6 + 2): 12 prompts
    assert (second.size, second.index) == (12, 6)  # and the run's completion counter continues
    loop.admitted(second, ["duplicate"] * 11 + ["new"], ["b"])
    third = loop.next_batch(20)  # 2 short at (2 + 1) / (18 + 2): 14 prompts
    assert third.size == 14
    loop.admitted(third, ["new"] * 3 + ["invalid"] * 11, ["c", "d", "e"])  # one over the quota: it trains too
    assert loop.quota_done() and loop.next_batch(6) is None
    assert loop.counts[0].generated == 32 and loop.counts[0].sent == 5 and set(loop.pending) == set("abcde")


def test_the_cycle_cap_and_the_next_cycle_use_what_was_measured():
    loop = make(per_cycle=2, max_generations_per_cycle=8, every_k=99)
    fill(loop, ["new"] + ["invalid"] * 3, size=20)  # a quota of 2 at the prior 1/2: 4 prompts
    last = loop.next_batch(20)  # 1 short at (1 + 1) / (4 + 2) wants 3
    assert last.size == 3
    loop.admitted(last, ["invalid"] * 3, [])
    last = loop.next_batch(20)  # 1 short at (1 + 1) / (7 + 2) wants 5, but 1 is left of the cycle's 8
    assert last.size == 1
    loop.admitted(last, ["new"], ["c"])
    loop.finished_candidate("c0", accepted=False)
    actions = loop.finished_candidate("c", accepted=False)
    assert any(isinstance(a, Advance) for a in actions) and loop.cycle == 1
    assert loop.next_batch(20).size == 7  # a quota of 2 at cycle 0's (2 + 1) / (8 + 2): 6.7, so 7


def test_an_update_starts_at_every_k_accepted_and_takes_over_at_the_boundary():
    loop = make(per_cycle=4, every_k=2)
    new, _ = fill(loop, ["new"] * 4)
    assert loop.quota_done() and loop.finished_candidate(new[0], accepted=True) == []
    actions = loop.finished_candidate(new[1], accepted=True)
    assert actions == [Learn(version=1, forced=False)] and loop.learning == 1
    assert loop.next_batch(4) is None  # quota met, update running: cycle 0 waits
    assert loop.adapter_ready(1) == [Advance(ended=0, started=1, adapter=1, activated=True)]
    batch = loop.next_batch(4)
    assert (batch.cycle, batch.adapter) == (1, 1)
    assert set(loop.pending) == {new[2], new[3]}  # cycle 0's stragglers still count, in the next update


def test_a_staged_adapter_waits_for_the_quota():
    loop = make(per_cycle=4, every_k=1)
    new, _ = fill(loop, ["new", "new", "invalid", "invalid"])
    assert loop.finished_candidate(new[0], accepted=True) == [Learn(1, False)]
    assert loop.adapter_ready(1) == []  # staged; cycle 0 has not generated its quota yet
    assert loop.staged == 1 and loop.next_batch(4).adapter == 0


def test_a_boundary_without_an_adapter_waits_for_its_candidates_then_forces_one_update():
    loop = make(per_cycle=2, every_k=5)
    new, actions = fill(loop, ["new", "new"], size=2)
    assert actions == [] and loop.next_batch(2) is None
    assert loop.finished_candidate(new[0], accepted=True) == []  # one still training: wait
    assert loop.finished_candidate(new[1], accepted=False) == [Learn(version=1, forced=True)]
    actions = loop.update_failed(1, "boom")
    assert isinstance(actions[0], Note) and actions[-1] == Advance(0, 1, 0, activated=False)  # no second try


def test_a_boundary_with_nothing_accepted_moves_on_without_an_update():
    loop = make(per_cycle=2)
    new, _ = fill(loop, ["new", "new"], size=2)
    loop.finished_candidate(new[0], accepted=False)
    actions = loop.finished_candidate(new[1], accepted=False)
    assert "without an update" in actions[0].text and actions[1] == Advance(0, 1, 0, activated=False)


def test_a_rejected_adapter_leaves_the_active_one_and_is_not_retried_at_that_boundary():
    loop = make(per_cycle=2, every_k=2)
    new, _ = fill(loop, ["new", "new"], size=2)
    loop.finished_candidate(new[0], accepted=True)
    assert loop.finished_candidate(new[1], accepted=True) == [Learn(1, False)]
    actions = loop.adapter_rejected(1, "novel yield fell")
    assert "rejected" in actions[0].text and actions[-1] == Advance(0, 1, 0, activated=False)
    assert loop.next_version == 2  # the rejected version's name is never reused


def test_repeated_update_failures_turn_learning_off():
    loop = make(cycles=10, per_cycle=1, every_k=1, max_learner_failures=2)
    for version in (1, 2):
        new, _ = fill(loop, ["new"], size=1)
        assert loop.finished_candidate(new[0], accepted=True) == [Learn(version, False)]
        loop.update_failed(version, "error")
    assert loop.learning_off
    new, _ = fill(loop, ["new"], size=1)
    actions = loop.finished_candidate(new[0], accepted=True)
    assert not any(isinstance(a, Learn) for a in actions) and actions[-1].adapter == 0


def test_no_update_is_started_in_the_last_cycle():
    loop = make(cycles=1, per_cycle=2, every_k=1)
    new, _ = fill(loop, ["new", "new"], size=2)
    assert loop.generation_over
    assert loop.finished_candidate(new[0], accepted=True) == []
    loop.finished_candidate(new[1], accepted=True)
    assert loop.finished and loop.learning is None


def test_a_capped_run_stops_generating_and_finishes_when_drained():
    loop = make(max_candidates=5, per_cycle=10)
    new, _ = fill(loop, ["new"] * 4)
    batch = loop.next_batch(4)
    assert batch.size == 1  # the cap, not the quota
    loop.admitted(batch, ["invalid"], [])
    assert loop.generation_over and not loop.finished
    for cid in new:
        loop.finished_candidate(cid, accepted=False)
    assert loop.finished


def test_a_budget_of_candidates_sent_is_never_overshot():
    loop = make(max_sent=5, per_cycle=4, cycles=5)
    new, _ = fill(loop, ["new", "new", "invalid", "duplicate"])  # 2 sent
    for cid in new:
        loop.finished_candidate(cid, accepted=False)
    while not loop.generation_over:
        batch = loop.next_batch(6)
        assert batch is not None and batch.size <= 5 - loop.sent_total
        kinds = ["new"] * batch.size  # the worst case: every prompt in flight comes back new
        new_ids = [f"x{batch.index + i}" for i in range(batch.size)]
        loop.admitted(batch, kinds, new_ids)
        for cid in new_ids:
            loop.finished_candidate(cid, accepted=False)
    assert loop.sent_total == 5


def test_stop_and_withdraw_end_the_run_without_the_queued_candidates():
    loop = make()
    new, _ = fill(loop, ["new"] * 4)
    loop.stop()
    assert loop.generation_over and loop.next_batch(4) is None and not loop.finished
    loop.finished_candidate(new[0], accepted=False)  # the one training finishes
    for cid in new[1:]:
        loop.withdraw(cid)  # queued, never started: left for a resume
    assert loop.finished


def test_a_lost_batch_frees_its_slots():
    loop = make()
    batch = loop.next_batch(4)
    loop.batch_lost(batch)
    assert loop.in_flight == 0 and loop.next_batch(4).index == 0


def test_an_unknown_candidate_changes_nothing():
    loop = make()
    assert loop.finished_candidate("never-sent", accepted=True) == [] and loop.accepted_since_update == 0


def _result(cid: str, acc: float) -> EvalResult:
    return EvalResult(candidate_id=cid, epochs=[EpochResult(epoch=1, val_accuracy=acc, seconds=1.0)])


def test_restore_reads_where_a_run_stands(tmp_path):
    """A store written as a run would leave it: the restored loop continues cycle, adapter, counters."""
    store = Store(tmp_path / "s.sqlite", create=True)
    store.start_cycle(0, 0)
    specs = [CandidateSpec(code=f"x = {i}\n", origin=Origin(cycle=c, sample=str(i))) for i, c in
             enumerate([0, 0, 1, 1])]
    store.add_candidate("bad", task="fill", cycle=0, status=FailureKind.PARSE)
    for s in specs:
        store.add_candidate(s.id, task="fill", cycle=s.origin.cycle, spec=s)
    store.complete(_result(specs[0].id, 0.9))
    store.add_adapter(1, "r-v1", str(tmp_path), 2, 0.1, 1.0)
    store.advance_cycle(0, 1, 1)
    store.complete(_result(specs[2].id, 0.95))
    (tmp_path / "v2").mkdir()
    store.add_adapter(2, "r-v2", str(tmp_path / "v2"), 2, 0.1, 1.0)
    store.decide_adapter(2, "staged", "ok")
    store.start_attempt(specs[3].id, "trainer-0")
    store.interrupt_open_attempts()  # what the driver does before restoring
    loop, unfinished = Loop.restore(Budget(cycles=4, per_cycle=2, max_generations_per_cycle=9, every_k=3), store, 0.8)
    assert (loop.cycle, loop.adapter, loop.staged, loop.next_version) == (1, 1, 2, 3)
    assert loop.generated_total == 5 and loop.counts[0].generated == 3 and loop.counts[0].sent == 2
    assert {s.id for s in unfinished} == {specs[1].id, specs[3].id}
    assert loop.pending == {specs[1].id: 0, specs[3].id: 1}
    assert loop.accepted_since_update == 0  # both accepted results came before v2 was made
    batch = loop.next_batch(1)
    assert batch is None and loop.quota_done()  # cycle 1 sent its 2: the staged v2 takes over at once
    assert loop.finished_candidate(specs[3].id, accepted=False)[0] == Advance(1, 2, 2, activated=True)


def test_the_budget_is_what_the_config_says():
    cfg = load_config(None, ["loop.cycles=7", "loop.candidates_per_cycle=5", "learner.every_k=3",
                             "loop.max_candidates=40", "learner.max_failures=2"])
    assert Budget.from_config(cfg) == Budget(cycles=7, per_cycle=5, max_generations_per_cycle=160, every_k=3,
                                             max_candidates=40, max_learner_failures=2, temperatures=(0.6,))
    assert Budget.from_config(load_config(None, ["loop.temperatures=[]", "llm.temperature=0.7"])).temperatures == (0.7,)
    assert Budget.from_config(load_config(None, ["loop.max_sent=12"])).max_sent == 12


def test_the_state_machine_needs_no_ray():
    import subprocess
    import sys

    code = "import sys, nngpt_ray.loop, nngpt_ray.store; assert 'ray' not in sys.modules and 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_restored_state_that_owes_an_action_gets_it_at_start(tmp_path):
    """The driver died right after the cycle's last candidate was recorded: quota met, nothing pending,
    accepted results waiting. No event will come, so `start` must produce the update (then the advance)."""
    store = Store(tmp_path / "s.sqlite", create=True)
    store.start_cycle(0, 0)
    specs = [CandidateSpec(code=f"y = {i}\n", origin=Origin(cycle=0, sample=str(i))) for i in range(2)]
    for s in specs:
        store.add_candidate(s.id, task="fill", cycle=0, spec=s)
        store.complete(_result(s.id, 0.9))
    budget = Budget(cycles=3, per_cycle=2, max_generations_per_cycle=9, every_k=5)
    loop, unfinished = Loop.restore(budget, store, 0.8)
    assert unfinished == [] and loop.quota_done() and not loop.can_generate()
    assert loop.start() == [Learn(version=1, forced=True)]
    assert loop.update_failed(1, "x")[-1] == Advance(0, 1, 0, activated=False)
    fresh = make()
    assert fresh.start() == [] and fresh.can_generate()  # a new run owes nothing


def test_each_batch_samples_at_the_temperature_that_yields_new_networks():
    temperatures = (0.4, 0.6, 0.8)
    loop = make(per_cycle=1000, max_generations_per_cycle=1000, temperatures=temperatures, seed=3)
    chosen = []
    for _ in range(120):  # 0.8 gives a new network 3 times in 4, the others 1 in 8
        batch = loop.next_batch(4)
        chosen.append(batch.temperature)
        kinds = ["new", "new", "new", "invalid"] if batch.temperature == 0.8 else ["new"] + ["duplicate"] * 3 \
            if batch.index % 8 == 0 else ["duplicate"] * 4
        loop.admitted(batch, kinds, [f"c{batch.index + i}" for i, k in enumerate(kinds) if k == "new"])
    assert set(chosen[:30]) == set(temperatures)  # all are tried
    assert chosen[60:].count(0.8) > 0.8 * len(chosen[60:])  # then the one that yields is used
    assert loop.temperature_record(0).startswith("0.4: ") and "0.8: " in loop.temperature_record(0)


def test_the_temperature_follows_the_adapter_from_cycle_to_cycle():
    loop = make(per_cycle=60, max_generations_per_cycle=400, every_k=10**6, temperatures=(0.4, 0.8), seed=1)
    def cycle(good: float) -> list[float]:
        chosen = []
        while not loop.quota_done():
            batch = loop.next_batch(4)
            chosen.append(batch.temperature)
            kinds = ["new"] * 2 + ["duplicate"] * 2 if batch.temperature == good else ["duplicate"] * 4
            loop.admitted(batch, kinds, [f"c{batch.index + i}" for i, k in enumerate(kinds) if k == "new"])
        for cid in list(loop.pending):
            loop.finished_candidate(cid, accepted=False)
        return chosen

    first = cycle(good=0.4)
    second = cycle(good=0.8)  # the new adapter is sharper: only the hot temperature still gives new networks
    assert loop.cycle == 2
    assert first[-10:].count(0.4) >= 8 and second[-10:].count(0.8) >= 8


def test_one_temperature_is_always_used():
    loop = make(temperatures=(0.7,))
    assert loop.next_batch(4).temperature == 0.7


def test_a_new_network_that_fails_to_build_is_not_counted_for_its_temperature():
    loop = make(per_cycle=10, max_generations_per_cycle=100, temperatures=(0.4, 0.8))
    batch = loop.next_batch(4)
    new = [f"c{i}" for i in range(3)]
    loop.admitted(batch, ["new", "new", "new", "invalid"], new)
    assert loop.arms[(0, batch.temperature)].new == 3
    loop.finished_candidate(new[0], accepted=False, valid=False)  # failed in the sandbox: forward
    loop.finished_candidate(new[1], accepted=True)
    loop.finished_candidate(new[1], accepted=True)  # a second report changes nothing
    assert loop.arms[(0, batch.temperature)].new == 2
    assert loop.temperature_record(0) == f"{batch.temperature:g}: 2/4"


def test_prompt_sources_that_keep_giving_duplicates_move_to_the_back():
    loop = make(per_cycle=1000, max_generations_per_cycle=1000, seed=5)
    for _ in range(10):  # "plain_cnn" prompts: every completion a duplicate; "vgg": half new
        batch = loop.next_batch(4)
        kinds = ["duplicate", "duplicate", "new", "invalid"]
        loop.admitted(batch, kinds, [f"n{batch.index}"], ["plain_cnn", "plain_cnn", "vgg", "vgg"])
    assert (loop.sources["plain_cnn"].generated, loop.sources["plain_cnn"].new) == (20, 0)
    ranks = [loop.rank_sources(["plain_cnn", "vgg", "resnet"]) for _ in range(200)]
    assert sum(r[-1] == "plain_cnn" for r in ranks) > 190  # last, almost always
    assert sum(r[0] == "resnet" for r in ranks) > 40  # an untried family still gets to the front
    batch = loop.next_batch(2)
    loop.admitted(batch, ["new", "new"], ["a", "b"], ["resnet", "resnet"])
    loop.finished_candidate("a", accepted=False, valid=False)  # it failed to build: not new after all
    assert (loop.sources["resnet"].generated, loop.sources["resnet"].new) == (2, 1)
