"""Seed corpus: one network family per file, written for this project, following the LEMUR module contract.

These files are data, not modules of nngpt_ray: they are read as text and only ever run inside the
sandbox. The comment line `# hyperparameters: {...}` in each gives settings it is known to train with.
"""
