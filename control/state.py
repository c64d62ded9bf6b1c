"""isolaned's persistent state: sqlite in WAL mode at state_dir/state.db.

What is here is what the datapath runs after a restart: tenants (with their
owner and budget), their classification rules and their programs (source,
engine, hashes, bounds). Each mutation is one transaction (`State.change()`)
that the daemon commits only after the datapath accepted the change, so a
kill -9 at any moment leaves either the old or the new state, never half of
one (sqlite's WAL journal makes the commit atomic and durable).
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    owner_spec TEXT NOT NULL,
    owner_uid INTEGER,
    owner_gid INTEGER,
    share REAL NOT NULL,
    cap_us REAL NOT NULL,
    queue_cap INTEGER NOT NULL,
    handler TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rules (
    tenant INTEGER NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    pos INTEGER NOT NULL,
    ip_dst TEXT, proto TEXT, dport INTEGER, vlan INTEGER,
    PRIMARY KEY (tenant, pos)
);
CREATE TABLE IF NOT EXISTS programs (
    tenant INTEGER PRIMARY KEY REFERENCES tenants(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    source TEXT NOT NULL,
    engine TEXT NOT NULL,
    function TEXT,
    loop_budget INTEGER,
    source_sha256 TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    insns INTEGER NOT NULL,
    bound_insns INTEGER NOT NULL,
    bound_cycles REAL NOT NULL,
    loaded_at REAL NOT NULL
);
"""

TENANT_COLS = ("id", "name", "owner_spec", "owner_uid", "owner_gid", "share", "cap_us",
               "queue_cap", "handler", "created_at")
RULE_COLS = ("ip_dst", "proto", "dport", "vlan")
PROGRAM_COLS = ("tenant", "label", "source", "engine", "function", "loop_budget", "source_sha256",
                "artifact_sha256", "insns", "bound_insns", "bound_cycles", "loaded_at")


class StateError(Exception):
    """The state database cannot be opened or has a schema this daemon does not know."""


class State:
    """The database; every method is safe from any thread (one lock)."""

    def __init__(self, state_dir: str | os.PathLike):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        self.path = self.dir / "state.db"
        self._lock = threading.RLock()   # the writer (changes)
        self._rlock = threading.Lock()   # the reader connection
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StateError(f"{self.path}: sqlite refused WAL mode (got {mode})")
            # NORMAL in WAL mode: a commit survives the process's death (kill -9)
            # without an fsync per commit; a power cut may lose the last commits,
            # never the database's consistency
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            # no checkpoint inside a commit (it fsyncs the database: a request
            # would wait for the disk); checkpoint() runs them off the request path
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._migrate()
            # reads go through their own connection: WAL lets them see the last
            # commit while a change (holding the writer) waits for the datapath
            self._rdb = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._rdb.row_factory = sqlite3.Row
            self._rdb.execute("PRAGMA busy_timeout=5000")
            self._cdb = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._cdb.execute("PRAGMA busy_timeout=5000")
            self._clock = threading.Lock()
        except sqlite3.Error as e:
            raise StateError(f"{self.path}: {e}") from None
        os.chmod(self.path, 0o600)  # holds every tenant's source: root only

    def _migrate(self) -> None:
        with self.change():
            # statement by statement: executescript would COMMIT our transaction
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    self._db.execute(stmt)
            row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                                 (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StateError(f"{self.path}: schema version {row[0]}, this isolaned knows "
                                 f"{SCHEMA_VERSION}")

    def exclusive(self):
        """The lock every change holds: no change runs while it is held."""
        return self._lock

    def checkpoint(self) -> None:
        """Copies the WAL into the database file (PASSIVE: never blocks a
        change or a read); the daemon calls it from a background thread."""
        with self._clock:
            self._cdb.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        with self._lock, self._rlock, self._clock:
            self._db.close()
            self._rdb.close()
            self._cdb.close()

    @contextlib.contextmanager
    def change(self):
        """One transaction: committed when the block ends normally, rolled
        back when it raises (e.g. because the datapath refused the change).
        Holds the lock throughout, so changes are serialised."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ---- reads

    @contextlib.contextmanager
    def _snapshot(self):
        """One read transaction: tenants and their rules from the same commit."""
        with self._rlock:
            self._rdb.execute("BEGIN")
            try:
                yield self._rdb
            finally:
                self._rdb.execute("COMMIT")

    def tenants(self) -> list[dict]:
        with self._snapshot() as db:
            rows = db.execute("SELECT * FROM tenants ORDER BY id").fetchall()
            return [self._tenant(row) for row in rows]

    def tenant(self, key) -> dict | None:
        """By numeric id (int or digit string) or by name."""
        with self._snapshot():
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
                row = self._rdb.execute("SELECT * FROM tenants WHERE id=?", (int(key),)).fetchone()
            else:
                row = self._rdb.execute("SELECT * FROM tenants WHERE name=?", (key,)).fetchone()
            return self._tenant(row) if row else None

    def _tenant(self, row) -> dict:
        t = dict(row)
        t["rules"] = [dict(r) for r in self._rdb.execute(
            "SELECT ip_dst, proto, dport, vlan FROM rules WHERE tenant=? ORDER BY pos", (t["id"],))]
        for r in t["rules"]:
            for k in [k for k, v in r.items() if v is None]:
                del r[k]
        return t

    def all_rules(self) -> list[tuple[int, dict]]:
        with self._rlock:
            rows = self._rdb.execute("SELECT * FROM rules ORDER BY tenant, pos").fetchall()
            return [(r["tenant"], {k: r[k] for k in RULE_COLS if r[k] is not None}) for r in rows]

    def program(self, tenant_id: int) -> dict | None:
        with self._rlock:
            row = self._rdb.execute("SELECT * FROM programs WHERE tenant=?", (tenant_id,)).fetchone()
            return dict(row) if row else None

    def programs(self) -> list[dict]:
        with self._rlock:
            return [dict(r) for r in self._rdb.execute("SELECT * FROM programs ORDER BY tenant")]

    def counts(self) -> tuple[int, int]:
        with self._rlock:
            return (self._rdb.execute("SELECT count(*) FROM tenants").fetchone()[0],
                    self._rdb.execute("SELECT count(*) FROM programs").fetchone()[0])

    def integrity(self) -> str:
        with self._rlock:
            return self._rdb.execute("PRAGMA integrity_check").fetchone()[0]

    # ---- writes (call inside change())

    def insert_tenant(self, t: dict) -> None:
        self._db.execute(
            f"INSERT INTO tenants ({', '.join(TENANT_COLS)}) VALUES ({', '.join('?' * len(TENANT_COLS))})",
            tuple(t.get(c, time.time() if c == "created_at" else None) for c in TENANT_COLS))
        self.replace_rules(t["id"], t.get("rules", []))

    def update_tenant(self, tenant_id: int, **fields) -> None:
        cols = [c for c in fields if c in TENANT_COLS and c != "id"]
        if cols:
            self._db.execute(f"UPDATE tenants SET {', '.join(c + '=?' for c in cols)} WHERE id=?",
                             (*[fields[c] for c in cols], tenant_id))

    def replace_rules(self, tenant_id: int, rules: list[dict]) -> None:
        self._db.execute("DELETE FROM rules WHERE tenant=?", (tenant_id,))
        for pos, r in enumerate(rules):
            self._db.execute("INSERT INTO rules VALUES (?, ?, ?, ?, ?, ?)",
                             (tenant_id, pos, *[r.get(k) for k in RULE_COLS]))

    def delete_tenant(self, tenant_id: int) -> None:
        self._db.execute("DELETE FROM tenants WHERE id=?", (tenant_id,))  # cascades

    def put_program(self, p: dict) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO programs ({', '.join(PROGRAM_COLS)}) "
            f"VALUES ({', '.join('?' * len(PROGRAM_COLS))})", tuple(p[c] for c in PROGRAM_COLS))

    def delete_program(self, tenant_id: int) -> None:
        self._db.execute("DELETE FROM programs WHERE tenant=?", (tenant_id,))
