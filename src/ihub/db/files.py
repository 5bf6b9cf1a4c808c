"""SQLite database files readable by their owner only (0600), like the key file.

The database holds sealed secrets, password hashes, API key hashes and run records: nobody else on the host
needs to read it. SQLite creates `-wal`, `-shm` and `-journal` files with the permissions of the database file
itself (os_unix.c, findCreateFileMode), so creating the main file as 0600 before anything opens it is enough
for new databases; files that already exist are tightened to 0600 at every start.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

OWNER_ONLY = 0o600
SIDE_FILES = ("-wal", "-shm", "-journal")


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or parsed.query.get("mode") == "memory":
        return None
    return Path(database)


def restrict_database_files(url: str) -> None:
    """Create the SQLite file of `url` as 0600 if missing, and make it and its side files 0600 if not."""
    path = sqlite_path(url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_CREAT with 0600: the file never exists with a wider mode, not even for an instant.
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, OWNER_ONLY))
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in SIDE_FILES)):
        try:
            if candidate.stat().st_mode & 0o777 != OWNER_ONLY:
                candidate.chmod(OWNER_ONLY)
        except FileNotFoundError:
            continue
