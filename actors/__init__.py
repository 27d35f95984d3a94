"""Ray actors, one per file, each a thin shell around a core class of nngpt_ray (which imports no Ray).

Installed as `nngpt_ray.actors`. Actor names carry the run name, so the Ray dashboard shows which
stage is which: nngpt-store/<run>, nngpt-dedup/<run>, nngpt-predictor/<run>, nngpt-learner/<run>,
nngpt-trainer-<i>/<run>, plus the Serve application nngpt-llm-<run>.
"""


def actor_name(stage: str, run: str) -> str:
    return f"nngpt-{stage}/{run}"
