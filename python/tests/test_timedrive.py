"""examples/timedrive.py (Time Drive's backend class on the dup package)
run against a real file:// archive and over S3 on the loopback server of
scripts/test-servers."""

import os
import subprocess
import sys
import uuid

from conftest import make_tree, skip

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "timedrive.py")


def run_example(world, url, env=None, passphrase=None):
    src = make_tree(world.path("src"), files=12)
    os.mkdir(world.path("work"))
    args = [sys.executable, EXAMPLE, src, url, world.path("work")]
    if passphrase:
        args += ["--passphrase", passphrase]
    p = subprocess.run(args, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"timedrive.py failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    assert "restored" in p.stdout and ": ok" in p.stdout
    return p.stdout


def test_timedrive_file(world):
    os.mkdir(world.path("arch"))  # the folder a user picks exists
    run_example(world, world.url())


def test_timedrive_s3_encrypted(world):
    need = ["DUP_TEST_S3_ENDPOINT", "DUP_TEST_S3_BUCKET", "DUP_TEST_S3_ACCESS_KEY", "DUP_TEST_S3_SECRET_KEY"]
    missing = [v for v in need if not os.environ.get(v)]
    if missing:
        skip(f"no loopback S3 server ({', '.join(missing)} unset: run eval \"$(scripts/test-servers start)\")")
    env = {
        "DUP_S3_ENDPOINT": os.environ["DUP_TEST_S3_ENDPOINT"],
        "AWS_ACCESS_KEY_ID": os.environ["DUP_TEST_S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": os.environ["DUP_TEST_S3_SECRET_KEY"],
    }
    url = f"s3://{os.environ['DUP_TEST_S3_BUCKET']}/python-{uuid.uuid4().hex}"
    run_example(world, url, env, passphrase="s3 secret")
