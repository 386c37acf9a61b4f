"""dup: encrypted incremental backups in duplicity 0.8's format.

The verbs of dup's Rust API (``dup::api``), each a function taking keyword
options and returning plain Python values (dicts and lists). Every call
releases the GIL while it works, so calls in several threads run at once;
a job on an archive another job of this process is changing raises
``dup.Locked``. Nothing is global: each call opens its own archive.

Every call takes the archive's options as keywords: ``archive_dir`` and
``name`` (the local cache), ``passphrase`` (symmetric encryption; str or
bytes), or ``encrypt_keys``, ``sign_key``, ``sign_passphrase`` and
``key_files`` (public keys, from files or GnuPG's keyring). Times are Unix
seconds or duplicity's time strings ("3D", "2026-12-01T10:00:00").

Long calls take ``progress=`` (a callable receiving each event as a dict,
called in a worker thread with the GIL held; an exception raised in it
cancels the job and is raised again by the call) and ``cancel=`` (a
``dup.Cancel`` whose ``.cancel()`` stops the job with ``dup.Interrupted``),
and ``log=`` (a callable receiving only the events with a ``message``:
warnings and log lines). Ctrl-C stops a call the same way, which then
raises KeyboardInterrupt.

Errors are ``dup.Error`` subclasses with ``.kind`` (``"locked"``,
``"crypto"``, ...), ``.exit_code`` (the binaries' exit code) and ``.hint``.
"""

from ._dup import (  # noqa: F401
    AuthRefused,
    Cancel,
    Corrupt,
    Crypto,
    Error,
    Interrupted,
    Locked,
    NoBackup,
    NotFound,
    Partial,
    PermissionDenied,
    Unreachable,
    Unwritable,
    Usage,
    backup,
    changes,
    coalesce,
    delete,
    file_history,
    files_at,
    restore,
    snapshots,
    test_connection,
    verify,
)

# Time Drive's names for the verbs (its backend class calls these).


def get_snapshot_list(url, **options):
    """The archive's complete backup sets (dicts with ``end``, the set's
    time, ``type``, ``chain``, ``volumes``, ``encrypted``), oldest first."""
    return [s for s in snapshots(url, **options) if s["status"] != "incomplete"]


def get_file_list(url, time=None, path=None, **options):
    """The files at ``time`` (None: the latest); with ``path``, only that
    directory's direct children."""
    return files_at(url, time=time, path=path, **options)


def test_connection_url(url):
    """Whether the backend at ``url`` answers: a dict with ``status``
    (``"ok"`` or what failed), ``message`` and ``hint``."""
    return test_connection(url)


def restore_file(url, path, dest, time=None, **options):
    """Restores ``path`` (a file or directory of the backup) as it was at
    ``time`` (None: the latest) to ``dest``."""
    return restore(url, dest, path=path, time=time, **options)


def start_backup(source, url, **options):
    """Backs up ``source`` to ``url`` (a full when there is no chain, else an
    incremental; ``mode="full"`` forces a full)."""
    return backup(source, url, **options)


def delete_backup(url, older_than=None, keep_full=None, dry_run=False, **options):
    """Deletes the backups older than ``older_than`` (a time), or all but
    the ``keep_full`` newest full chains; with neither, the leftovers of
    unfinished backups (duplicity's cleanup). ``dry_run`` only lists them."""
    cleanup = older_than is None and keep_full is None
    return delete(url, older_than=older_than, keep_full=keep_full, cleanup=cleanup, dry_run=dry_run, **options)
