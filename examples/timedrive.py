#!/usr/bin/env python3
"""Time Drive's backend class on dup's Python API: each of its methods is a
few lines over the ``dup`` package.

Run as a program it drives one round trip against a real archive and checks
it: ``timedrive.py SOURCE URL WORKDIR [--passphrase P]`` backs SOURCE up to
URL (full, then incremental after a change), lists the snapshots and files,
restores one file from each snapshot and the whole tree, and compares them
with what was backed up. It exits 1 on any difference. Backend credentials
come from the environment as for duplicity (AWS_ACCESS_KEY_ID, ...).
"""

import argparse
import filecmp
import os
import sys
import threading

import dup


class TimeDriveBackend:
    """One archive (URL + cache + passphrase), as Time Drive's settings hold it."""

    def __init__(self, url, archive_dir=None, passphrase=None, on_event=None):
        self.url = url
        self.opts = {"archive_dir": archive_dir, "passphrase": passphrase}
        self.on_event = on_event or (lambda event: None)
        self.cancel_token = None
        self.lock = threading.Lock()

    def start_backup(self, source, full=False, excludes=()):
        self.cancel_token = dup.Cancel()
        selection = [arg for pattern in excludes for arg in ("--exclude", pattern)]
        return dup.start_backup(source, self.url, mode="full" if full else "auto", selection=selection,
                                progress=self.on_event, cancel=self.cancel_token, **self.opts)

    def cancel(self):
        if self.cancel_token is not None:
            self.cancel_token.cancel()

    def get_snapshot_list(self):
        return [s["end"] for s in dup.get_snapshot_list(self.url, **self.opts)]

    def get_file_list(self, snapshot=None, path=None):
        return [f["path"] for f in dup.get_file_list(self.url, time=snapshot, path=path, **self.opts)]

    def restore_file(self, path, dest, snapshot=None):
        return dup.restore_file(self.url, path, dest, time=snapshot, progress=self.on_event, **self.opts)

    def test_connection_url(self):
        check = dup.test_connection_url(self.url)
        return check["status"] == "ok", check["message"]

    def delete_backup(self, older_than=None, keep_full=None, dry_run=False):
        return dup.delete_backup(self.url, older_than=older_than, keep_full=keep_full, dry_run=dry_run, **self.opts)

    def coalesce(self, drop_old=True):
        return dup.coalesce(self.url, drop_old=drop_old, progress=self.on_event, **self.opts)


def same_tree(a, b):
    """True when the trees hold the same names and file contents."""
    c = filecmp.dircmp(a, b)
    if c.left_only or c.right_only or c.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, c.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(a, d), os.path.join(b, d)) for d in c.common_dirs)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source")
    p.add_argument("url")
    p.add_argument("workdir", help="an empty directory for the cache and the restores")
    p.add_argument("--passphrase")
    a = p.parse_args()
    events = []
    td = TimeDriveBackend(a.url, os.path.join(a.workdir, "cache"), a.passphrase, events.append)

    ok, message = td.test_connection_url()
    assert ok, f"connection test failed: {message}"
    first = td.start_backup(a.source)
    assert first["full"], first
    with open(os.path.join(a.source, "timedrive-new.txt"), "w") as f:
        f.write("added after the first backup\n")
    second = td.start_backup(a.source)
    assert not second["full"] and second["new"] >= 1, second
    assert any(e["event"] == "finish" for e in events), "progress events"

    snaps = td.get_snapshot_list()
    assert snaps == [first["time"], second["time"]], (snaps, first, second)
    assert "timedrive-new.txt" not in td.get_file_list(snaps[0])
    assert "timedrive-new.txt" in td.get_file_list(snaps[1])
    top = td.get_file_list(snaps[1], path=".")
    assert top and all("/" not in f for f in top), top

    out = os.path.join(a.workdir, "restored-file")
    td.restore_file("timedrive-new.txt", out, snaps[1])
    assert filecmp.cmp(out, os.path.join(a.source, "timedrive-new.txt"), shallow=False)
    whole = os.path.join(a.workdir, "restored")
    td.restore_file(".", whole)
    assert same_tree(a.source, whole), "the restored tree differs from the source"
    print(f"timedrive: {len(snaps)} snapshots, {len(td.get_file_list())} files, restored {whole}: ok")

    plan = td.delete_backup(keep_full=1, dry_run=True)
    assert plan["files"] == [] and plan["deleted"] == 0, plan  # the newest chain is never deleted
    td.coalesce()
    after = td.get_snapshot_list()
    assert len(after) == 1 and after[0] > snaps[1], after
    td.restore_file(".", os.path.join(a.workdir, "restored-coalesced"))
    assert same_tree(a.source, os.path.join(a.workdir, "restored-coalesced"))
    td.delete_backup()  # cleanup: nothing left over
    print(f"timedrive: coalesced into one full at {after[0]}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
