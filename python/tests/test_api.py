"""The dup Python package against real file:// archives: backup, listing,
restore, encryption, errors, progress, cancel, and jobs in threads."""

import os
import subprocess
import sys
import threading
import time

import pytest

import dup
from conftest import make_tree, same_tree


def test_backup_list_restore(world):
    src = make_tree(world.path("src"))
    url = world.url()
    events = []
    r1 = dup.backup(src, url, archive_dir=world.cache, progress=events.append)
    assert r1["full"] and r1["warnings"] == 0 and r1["stored"] >= 3
    assert r1["files_read"] == 20

    with open(os.path.join(src, "f001"), "ab") as f:
        f.write(b"more")
    # As duplicity, a file is changed when its mtime (whole seconds) is.
    later = time.time() + 10
    os.utime(os.path.join(src, "f001"), (later, later))
    os.remove(os.path.join(src, "f002"))
    time.sleep(1)  # set times are whole seconds
    r2 = dup.backup(src, url, archive_dir=world.cache)
    assert not r2["full"] and r2["changed"] >= 1 and r2["deleted"] == 1 and r2["time"] > r1["time"]

    sets = dup.snapshots(url, archive_dir=world.cache)
    assert [s["type"] for s in sets] == ["full", "inc"]
    assert [s["end"] for s in sets] == [r1["time"], r2["time"]]
    assert not any(s["encrypted"] for s in sets)

    now = {f["path"] for f in dup.files_at(url, archive_dir=world.cache)}
    then = {f["path"] for f in dup.files_at(url, time=r1["time"], archive_dir=world.cache)}
    assert "f002" in then and "f002" not in now and "sub/f000" in now
    sub = [f["path"] for f in dup.files_at(url, path="sub", archive_dir=world.cache)]
    assert sub and all(p.startswith("sub/") and p.count("/") == 1 for p in sub)
    entry = next(f for f in dup.files_at(url, archive_dir=world.cache) if f["path"] == "f001")
    assert entry["type"] == "file" and entry["mtime"] == int(later)

    out = world.path("out")
    r = dup.restore(url, out, archive_dir=world.cache)
    assert r["items"] >= 20 and same_tree(src, out)
    old = world.path("old-f002")
    dup.restore(url, old, path="f002", time=r1["time"], archive_dir=world.cache)
    assert os.path.getsize(old) == 10_002


def test_encrypted_archive_and_wrong_passphrase(world):
    src = make_tree(world.path("src"), files=5)
    url = world.url()
    dup.backup(src, url, passphrase="correct horse", archive_dir=world.cache)
    assert all(s["encrypted"] for s in dup.snapshots(url, archive_dir=world.cache))
    assert any(n.endswith(".gpg") for n in os.listdir(world.path("arch")))
    dup.restore(url, world.path("out"), passphrase=b"correct horse", archive_dir=world.cache)
    assert same_tree(src, world.path("out"))

    with pytest.raises(dup.Crypto) as e:
        dup.restore(url, world.path("out2"), passphrase="wrong", archive_dir=world.cache)
    assert isinstance(e.value, dup.Error)
    assert e.value.kind == "crypto" and e.value.exit_code == 12 and str(e.value)
    # An incremental with another passphrase is refused: a chain keeps one.
    with pytest.raises(dup.Crypto):
        dup.backup(src, url, passphrase="wrong", archive_dir=world.cache)


def test_errors_carry_kind_exit_code_and_hint(world):
    os.mkdir(world.path("empty"))
    with pytest.raises(dup.NoBackup) as e:
        dup.backup(world.path("empty"), world.url(), mode="incremental", archive_dir=world.cache)
    assert e.value.kind == "no_backup" and e.value.exit_code == 10 and e.value.hint
    with pytest.raises(dup.Usage):
        dup.backup(world.path("empty"), world.url(), mode="sometimes")
    with pytest.raises(dup.Error) as e:
        dup.backup(world.path("no-such-dir"), world.url(), archive_dir=world.cache)
    assert e.value.exit_code != 0
    check = dup.test_connection("file://" + world.path("nowhere"))
    assert check["status"] == "not_found" and check["message"]
    assert dup.test_connection(world.url())["status"] == "ok"


def test_progress_events(world):
    src = make_tree(world.path("src"), files=30)
    events = []
    threads = set()

    def on_event(e):
        events.append(e)
        threads.add(threading.get_ident())

    dup.backup(src, world.url(), archive_dir=world.cache, progress=on_event)
    kinds = {e["event"] for e in events}
    assert {"start", "progress", "file", "finish", "summary"} <= kinds, kinds
    stored = [e for e in events if e["event"] == "file" and e["action"] == "stored"]
    assert any(e["name"].endswith(".manifest") for e in stored)
    # A backup's items come metered: progress with totals, 100 % once, last.
    progress = [e for e in events if e["event"] == "progress"]
    # The finish event counts what the progress counted: 30 files, 2 directories.
    assert events[-2] == {"event": "finish", "stage": "backup", "items": 32, "bytes": events[-2]["bytes"]}
    assert progress[-1]["files_done"] == 32
    assert "item" not in kinds
    assert [e["percent"] for e in progress].count(100.0) == 1 and progress[-1]["percent"] == 100.0
    assert progress[-1]["files_done"] == progress[-1]["files_total"]
    summary = events[-1]
    assert summary["event"] == "summary" and summary["stage"] == "backup", summary
    assert summary["bytes_stored"] == events[-2]["bytes"]
    # Called from the job's stage threads too (with the GIL taken again).
    assert threads - {threading.get_ident()}


def test_callback_exception_stops_the_job_and_is_raised(world):
    src = make_tree(world.path("src"), files=12, size=300_000)
    calls = []

    def boom(e):
        calls.append(e)
        if e["event"] == "file" and e["action"] == "stored":
            raise ValueError("the GUI went away")

    with pytest.raises(ValueError, match="the GUI went away"):
        dup.backup(src, world.url(), volsize=1 << 20, compress=False, archive_dir=world.cache, progress=boom)
    # The job stopped: no set was published, and no event came after the exception.
    assert calls[-1]["event"] == "file"
    assert [s["status"] for s in dup.snapshots(world.url(), archive_dir=world.cache)] == ["incomplete"]
    # The archive is left usable: the next backup resumes and restores.
    r = dup.backup(src, world.url(), volsize=1 << 20, compress=False, archive_dir=world.cache)
    assert r["skipped"] >= 1
    dup.restore(world.url(), world.path("out"), archive_dir=world.cache)
    assert same_tree(src, world.path("out"))


def test_two_backups_in_two_threads_run_at_once(world):
    """Each job's first event waits until the other job has sent one: that
    only happens when both run at once, so the GIL is released while they work."""
    srcs = [make_tree(world.path(f"src{i}"), files=10, seed=i) for i in range(2)]
    seen = [threading.Event(), threading.Event()]
    overlapped = [False, False]
    results, errors = [None, None], []

    def job(i):
        def on_event(e):
            seen[i].set()
            if not overlapped[i]:
                overlapped[i] = seen[1 - i].wait(timeout=20)

        try:
            results[i] = dup.backup(srcs[i], world.url(f"arch{i}"), archive_dir=world.cache, progress=on_event)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert overlapped == [True, True]
    for i in range(2):
        assert results[i]["full"]
        dup.restore(world.url(f"arch{i}"), world.path(f"out{i}"), archive_dir=world.cache)
        assert same_tree(srcs[i], world.path(f"out{i}"))


def test_same_archive_refused_while_busy(world):
    src = make_tree(world.path("src"), files=5)
    started, release = threading.Event(), threading.Event()
    errors = []

    def hold(e):
        started.set()
        release.wait(timeout=30)

    def first():
        try:
            dup.backup(src, world.url(), archive_dir=world.cache, progress=hold)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert started.wait(timeout=30)
        with pytest.raises(dup.Locked) as e:
            dup.backup(src, world.url(), archive_dir=world.cache)
        assert e.value.kind == "locked" and e.value.exit_code == 11
        # Another archive is not held.
        dup.backup(src, world.url("other"), archive_dir=world.cache)
    finally:
        release.set()
        t.join()
    assert not errors, errors
    assert len(dup.snapshots(world.url(), archive_dir=world.cache)) == 1


def test_cancel_then_resume(world):
    """A backup cancelled from another thread after its first volume stops
    within a second with dup.Interrupted; the next backup resumes it."""
    src = make_tree(world.path("src"), files=24, size=1 << 20)
    cancel = dup.Cancel()
    stored = threading.Event()
    errors, ended = [], []

    def on_event(e):
        if e["event"] == "file" and e["action"] == "stored" and ".vol" in e["name"]:
            stored.set()

    def job():
        try:
            dup.backup(src, world.url(), volsize=1 << 20, compress=False, archive_dir=world.cache,
                       progress=on_event, cancel=cancel)
        except BaseException as e:
            errors.append(e)
        ended.append(time.monotonic())

    t = threading.Thread(target=job)
    t.start()
    assert stored.wait(timeout=60), "no volume was stored"
    cancelled_at = time.monotonic()
    cancel.cancel()
    t.join(timeout=30)
    assert cancel.cancelled
    assert len(errors) == 1 and isinstance(errors[0], dup.Interrupted), errors
    assert errors[0].kind == "interrupted" and errors[0].exit_code == 130
    assert ended[0] - cancelled_at < 1.0, f"returned {ended[0] - cancelled_at:.2f} s after cancel"
    assert [s["status"] for s in dup.snapshots(world.url(), archive_dir=world.cache)] == ["incomplete"]

    r = dup.backup(src, world.url(), volsize=1 << 20, compress=False, archive_dir=world.cache)
    assert r["full"] and r["skipped"] >= 1, r
    dup.restore(world.url(), world.path("out"), archive_dir=world.cache)
    assert same_tree(src, world.path("out"))


def test_log_callback_gets_warnings(world):
    src = make_tree(world.path("src"), files=3)
    r = dup.backup(src, world.url(), archive_dir=world.cache)
    logs, events = [], []
    # A time before the first backup: the oldest is restored, with a warning.
    dup.restore(world.url(), world.path("out"), time=r["time"] - 3600, archive_dir=world.cache,
                progress=events.append, log=logs.append)
    assert same_tree(src, world.path("out"))
    assert len(logs) == 1 and logs[0]["event"] == "warning" and "restoring the oldest" in logs[0]["message"]
    assert logs[0] in events and any(e["event"] == "finish" for e in events)
    # log alone: no progress events, only messages.
    only = []
    dup.restore(world.url(), world.path("out2"), time=r["time"] - 3600, archive_dir=world.cache, log=only.append)
    assert only == logs


def test_delete_coalesce_changes_history_verify(world):
    src = make_tree(world.path("src"), files=6)
    url, kw = world.url(), {"archive_dir": world.cache}
    times = []
    for i in range(3):
        with open(os.path.join(src, "f001"), "ab") as f:
            f.write(b"x" * (i + 1))
        later = time.time() + 10 * (i + 1)
        os.utime(os.path.join(src, "f001"), (later, later))
        mode = "full" if i == 2 else "auto"
        times.append(dup.backup(src, url, mode=mode, **kw)["time"])
        time.sleep(1)
    assert [(s["type"], s["chain"]) for s in dup.snapshots(url, **kw)] == [("full", 1), ("inc", 1), ("full", 2)]
    ch = dup.changes(url, time=times[1], **kw)
    assert ch == [{"path": "f001", "kind": "changed", "time": times[1]}]
    assert [c["time"] for c in dup.file_history(url, "f001", **kw)] == times
    v = dup.verify(url, src, compare_data=True, **kw)
    assert v["difference_count"] == 0 and v["items"] >= 6
    with open(os.path.join(src, "f003"), "wb") as f:
        f.write(b"changed")
    v = dup.verify(url, src, compare_data=True, **kw)
    assert v["difference_count"] == 1 and v["differences"][0]["path"] == "f003"

    plan = dup.delete(url, keep_full=1, dry_run=True, **kw)
    assert plan["deleted"] == 0 and plan["files"]
    assert len(dup.snapshots(url, **kw)) == 3
    with pytest.raises(dup.Usage):
        dup.delete(url, keep_full=1, cleanup=True, **kw)
    done = dup.delete(url, keep_full=1, **kw)
    assert done["deleted"] == len(plan["files"])
    assert [s["type"] for s in dup.snapshots(url, **kw)] == ["full"]

    with open(os.path.join(src, "f004"), "ab") as f:
        f.write(b"y")
    later = time.time() + 100
    os.utime(os.path.join(src, "f004"), (later, later))
    dup.backup(src, url, **kw)
    c = dup.coalesce(url, drop_old=True, **kw)
    assert c["backup"]["full"] and c["dropped"] is not None
    assert [s["type"] for s in dup.snapshots(url, **kw)] == ["full"]
    dup.restore(url, world.path("out"), **kw)
    assert same_tree(src, world.path("out"))


def test_ctrl_c_cancels_a_backup(world):
    """SIGINT to a program in dup.backup: KeyboardInterrupt once the job has
    stopped cleanly; the next backup resumes what was stored."""
    src = make_tree(world.path("src"), files=24, size=1 << 20)
    # SIGINT's handler is set here: a child of a shell's background job
    # starts with SIGINT ignored, and Python then leaves it so.
    prog = f"""
import os, signal, sys, dup
signal.signal(signal.SIGINT, signal.default_int_handler)
def on_event(e):
    if e["event"] == "file" and ".vol" in e["name"]:
        os.kill(os.getpid(), signal.SIGINT)
try:
    dup.backup({src!r}, {world.url()!r}, volsize=1 << 20, compress=False, archive_dir={world.cache!r},
               progress=on_event)
except KeyboardInterrupt:
    print("interrupted")
    sys.exit(7)
"""
    p = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120)
    assert p.returncode == 7 and "interrupted" in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert [s["status"] for s in dup.snapshots(world.url(), archive_dir=world.cache)] == ["incomplete"]
    r = dup.backup(src, world.url(), volsize=1 << 20, compress=False, archive_dir=world.cache)
    assert r["skipped"] >= 1


def test_files_streamed_and_paths_that_are_not_utf8(world):
    src = make_tree(world.path("src"), files=4)
    odd = os.fsencode(src) + b"/caf\xe9"
    with open(odd, "wb") as f:
        f.write(b"latin-1 name")
    dup.backup(src, world.url(), archive_dir=world.cache)
    seen = []
    n = dup.files_at(world.url(), each=seen.append, archive_dir=world.cache)
    assert n == len(seen) == len(dup.files_at(world.url(), archive_dir=world.cache))
    name = os.fsdecode(b"caf\xe9")
    assert name in [e["path"] for e in seen]
    dup.restore(world.url(), world.path("one"), path=name, archive_dir=world.cache)
    with open(world.path("one"), "rb") as f:
        assert f.read() == b"latin-1 name"

    def stop(e):
        raise KeyError("enough")

    with pytest.raises(KeyError):
        dup.files_at(world.url(), each=stop, archive_dir=world.cache)
