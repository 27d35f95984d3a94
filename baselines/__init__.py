"""Search baselines the LLM loop is measured against (Ray Tune with Optuna TPE, random search).

Installed as `nngpt_ray.baselines`. Empty until the baseline issue lands; the folder exists so the
package layout is the final one.
"""
