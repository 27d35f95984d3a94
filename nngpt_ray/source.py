"""Canonical forms of network code: what counts as "the same network".

Two completions that differ only in whitespace, comments or docstrings are the same network. The
canonical text is Python's own unparse of the syntax tree with docstrings dropped, so formatting
never leaks into identity; its SHA-256 is the key for exact deduplication, and its tokens feed the
MinHash sketch for near-duplicates.
"""

from __future__ import annotations

import ast
import hashlib
import io
import keyword
import threading
import tokenize

_PARSING = threading.Lock()


def parse_tree(code: str) -> ast.Module:
    """`ast.parse`, one thread at a time: CPython 3.11 keeps the depth counter of its syntax-tree
    construction in state that threads share, and two threads parsing at once can fail with "SystemError:
    AST constructor recursion depth mismatch" (cpython#106905; seen with two sandboxes side by side in one
    process). Raises SyntaxError like `ast.parse`."""
    with _PARSING:
        return ast.parse(code)


def normalize(code: str) -> str:
    """Canonical text of `code`: comments, docstrings and formatting removed. Raises SyntaxError."""
    tree = parse_tree(code)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                if isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def code_hash(code: str) -> str:
    """Hex SHA-256 of the canonical text; falls back to whitespace-collapsed text if it does not parse."""
    try:
        canonical = normalize(code)
    except SyntaxError:
        canonical = " ".join(code.split())
    return hashlib.sha256(canonical.encode()).hexdigest()


def code_tokens(code: str) -> list[str]:
    """Tokens of the canonical text with identifiers kept: the shingles of near-duplicate detection."""
    try:
        text = normalize(code)
    except SyntaxError:
        text = code
    out: list[str] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type in (tokenize.NAME, tokenize.NUMBER, tokenize.OP, tokenize.STRING):
                out.append(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        out = text.split()
    return out


def short_hash(*parts: str, length: int = 16) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()[:length]


def is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)
