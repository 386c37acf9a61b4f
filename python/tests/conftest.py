"""Shared fixtures: a temporary world with a source tree, a file:// archive
and a cache directory, and the skip rule of tests/it/common (a missing tool or
server fails under DUP_REQUIRE_TOOLS=1, else skips with the reason)."""

import filecmp
import os
import random

import pytest


def require_tools():
    v = os.environ.get("DUP_REQUIRE_TOOLS", "")
    return v not in ("", "0")


def skip(what):
    """Skips the test for a missing tool or server, or fails under DUP_REQUIRE_TOOLS=1."""
    if require_tools():
        pytest.fail(f"{what}, and DUP_REQUIRE_TOOLS is set (unset it, or set it to 0, to skip instead)")
    pytest.skip(what)


def make_tree(root, files=20, size=10_000, seed=1):
    """A tree of random files (and one subdirectory) under root."""
    rnd = random.Random(seed)
    os.makedirs(os.path.join(root, "sub"), exist_ok=True)
    for i in range(files):
        d = "sub" if i % 4 == 0 else ""
        with open(os.path.join(root, d, f"f{i:03}"), "wb") as f:
            f.write(rnd.randbytes(size + i))
    return root


def same_tree(a, b):
    c = filecmp.dircmp(a, b)
    if c.left_only or c.right_only or c.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, c.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(a, d), os.path.join(b, d)) for d in c.common_dirs)


class World:
    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.cache = os.path.join(self.tmp, "cache")

    def path(self, *p):
        return os.path.join(self.tmp, *p)

    def url(self, name="arch"):
        return "file://" + self.path(name)


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)
