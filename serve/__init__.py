"""The LLM deployment (Ray Serve) and the engines behind it. Installed as `nngpt_ray.serve`."""
