"""Sandboxed execution of untrusted candidate code: a fork server per trainer and one confined child
per candidate (process.py, the parent side; child.py, the standalone script on the other side)."""
