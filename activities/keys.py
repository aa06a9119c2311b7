"""One data key per case, kept wrapped by a master key in the records; destroying it makes
every copy of the case's history unreadable (crypto-shredding).

`ESCALATION_MASTER_KEY` is 32 bytes, base64; `ESCALATION_OLD_MASTER_KEYS` (comma-separated)
unwrap only, until `escalate keys rotate` re-wraps everything under the current one. Data
keys are random AES-256 keys, cached unwrapped in memory by the process that uses them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Row, select, update

from activities.records import DataKeyRow, Records, insert_for, table_of

_KEYS = table_of(DataKeyRow)

MASTER, OLD_MASTERS = "ESCALATION_MASTER_KEY", "ESCALATION_OLD_MASTER_KEYS"


def _master(text: str, name: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{name}: not base64") from None
    if len(key) != 32:
        raise ValueError(f"{name}: a master key is 32 bytes (base64 of 32 random bytes)")
    return key


def master_id(key: bytes) -> str:
    """A name for a master key that does not reveal it."""
    return hashlib.sha256(b"escalation-desk/master:" + key).hexdigest()[:16]


@dataclass(frozen=True)
class MasterKeys:
    current: bytes
    old: tuple[bytes, ...] = ()

    @classmethod
    def from_env(cls, dev_folder: Path | None = None, create: bool = True) -> MasterKeys | None:
        """$ESCALATION_MASTER_KEY (and old ones); in --dev a key kept under ./data/ (made on
        first start; `create` False: only read). None: payloads are not encrypted."""
        text = os.environ.get(MASTER, "").strip()
        if not text and dev_folder is not None:
            path = dev_folder / "master-key"
            if not path.exists() and not create:
                return None
            if not path.exists():
                dev_folder.mkdir(parents=True, exist_ok=True)
                path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
                path.chmod(0o600)
            text = path.read_text().strip()
        if not text:
            return None
        olds = [t for t in os.environ.get(OLD_MASTERS, "").replace(",", " ").split() if t]
        return cls(
            _master(text, MASTER),
            tuple(_master(t, f"{OLD_MASTERS}[{i}]") for i, t in enumerate(olds)),
        )

    def wrap(self, key_id: str, data_key: bytes) -> tuple[bytes, str]:
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(self.current).encrypt(nonce, data_key, key_id.encode())
        return nonce + sealed, master_id(self.current)

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """With the current key or any old one; KeyError when none of them opens it."""
        for master in (self.current, *self.old):
            try:
                return AESGCM(master).decrypt(wrapped[:12], wrapped[12:], key_id.encode())
            except InvalidTag:
                continue
        raise KeyError(f"data key {key_id}: no master key configured can unwrap it")


@dataclass(frozen=True, slots=True)
class DataKey:
    key_id: str
    raw: bytes
    aad: bytes  # the namespace and workflow id the key belongs to

    @property
    def aead(self) -> AESGCM:
        """Made per use (about 1 µs): a kept AESGCM holds 1.3 KB of OpenSSL state, and the
        cache keeps a key for every case the process has served."""
        return AESGCM(self.raw)


class KeyStore:
    """Data keys by case (workflow id) and by id, wrapped in the records, cached here."""

    def __init__(self, records: Records, masters: MasterKeys) -> None:
        self.records, self.masters = records, masters
        self._by_id: dict[str, DataKey | None] = {}
        self._by_subject: dict[tuple[str, str], DataKey | None] = {}
        # one lock per case being looked up: a burst of new cases does not queue every
        # case's first lookup behind one lock (the records settle a race: one row per case)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @staticmethod
    def _key(row_id: str, namespace: str, subject: str, raw: bytes) -> DataKey:
        return DataKey(row_id, raw, f"{namespace}/{subject}".encode())

    async def for_case(self, namespace: str, workflow_id: str) -> DataKey | None:
        """The case's key, made on first use (one per case, whichever process asks first);
        None once it was destroyed (the case was erased)."""
        subject = (namespace, workflow_id)
        if subject in self._by_subject:
            return self._by_subject[subject]
        lock = self._locks.setdefault(subject, asyncio.Lock())
        try:
            async with lock:
                if subject not in self._by_subject:
                    # shielded: a caller given up on mid-query must not strand the connection
                    found = await asyncio.shield(self._load_or_make(namespace, workflow_id))
                    self._by_subject[subject] = found
                    if found is not None:
                        self._by_id[found.key_id] = found
        finally:
            if self._locks.get(subject) is lock and not lock.locked():
                del self._locks[subject]
        return self._by_subject[subject]

    async def _load_or_make(self, namespace: str, subject: str) -> DataKey | None:
        """The case's key as the records have it, made if there is none: a new key's row
        goes in first (one statement for a new case); only a case that has one reads it."""
        key_id = secrets.token_hex(16)
        raw = AESGCM.generate_key(bit_length=256)
        wrapped, mid = self.masters.wrap(key_id, raw)
        row = {
            "key_id": key_id,
            "namespace": namespace,
            "subject": subject,
            "wrapped": wrapped,
            "master_id": mid,
            "created_at": datetime.now(UTC),
        }

        def load_or_make(c: Connection) -> tuple[str, bytes | None] | None:
            made = c.execute(
                insert_for(c.dialect.name)(_KEYS)
                .values(row)
                .on_conflict_do_nothing(index_elements=["namespace", "subject"])
                .returning(_KEYS.c.key_id)
            ).first()
            if made is not None:
                return None
            this = _KEYS.c.namespace == namespace, _KEYS.c.subject == subject
            found = c.execute(select(_KEYS.c.key_id, _KEYS.c.wrapped).where(*this)).one()
            return found.key_id, found.wrapped

        kept = await self.records.run(load_or_make)
        if kept is None:  # made now
            return self._key(key_id, namespace, subject, raw)
        kept_id, kept_wrapped = kept
        if kept_wrapped is None:
            return None  # erased
        return self._key(kept_id, namespace, subject, self.masters.unwrap(kept_id, kept_wrapped))

    async def by_id(self, key_id: str) -> DataKey | None:
        """The key, or None when it was destroyed (erased) or never existed here."""
        if key_id in self._by_id:
            return self._by_id[key_id]
        row = await asyncio.shield(self._row(key_id))
        found = None
        if row is not None and row.wrapped is not None:
            raw = self.masters.unwrap(row.key_id, row.wrapped)
            found = self._key(row.key_id, row.namespace, row.subject, raw)
        if row is not None:  # a destroyed key stays destroyed
            self._by_id[key_id] = found
            # the worker decodes a new case's input first: its own payloads then need no read
            self._by_subject.setdefault((row.namespace, row.subject), found)
        return found

    async def _row(self, key_id: str) -> Row[Any] | None:
        return await self.records.run(
            lambda c: c.execute(select(_KEYS).where(_KEYS.c.key_id == key_id)).first()
        )

    def forget(self, subjects: list[str]) -> None:
        """Drop erased cases' keys from this process's cache."""
        for (ns, subject), key in list(self._by_subject.items()):
            if subject in subjects:
                self._by_subject[(ns, subject)] = None
                if key is not None:
                    self._by_id[key.key_id] = None


async def destroy(records: Records, subjects: list[str]) -> int:
    """Erase the data keys of these cases (workflow ids): their histories stay encrypted for
    good. Returns how many keys were destroyed."""
    async with records.transaction() as s:
        result = await s.execute(
            update(DataKeyRow)
            .where(DataKeyRow.subject.in_(subjects), DataKeyRow.wrapped.is_not(None))
            .values(wrapped=None, master_id=None, destroyed_at=datetime.now(UTC))
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def rotate(records: Records, masters: MasterKeys) -> tuple[int, int]:
    """Re-wrap every live data key under the current master key: (re-wrapped, already
    current). KeyError names a key no configured master key opens (nothing is changed)."""
    current = master_id(masters.current)
    async with records.transaction() as s:
        rows = (await s.scalars(select(DataKeyRow).where(DataKeyRow.wrapped.is_not(None)))).all()
        done = kept = 0
        for row in rows:
            if row.master_id == current:
                kept += 1
                continue
            assert row.wrapped is not None
            raw = masters.unwrap(row.key_id, row.wrapped)
            row.wrapped, row.master_id = masters.wrap(row.key_id, raw)
            done += 1
    return done, kept


async def erased_at(records: Records, workflow_id: str) -> datetime | None:
    """When this case's data was erased (its key destroyed), or None."""
    async with records.transaction() as s:
        return await s.scalar(
            select(DataKeyRow.destroyed_at).where(
                DataKeyRow.subject == workflow_id, DataKeyRow.wrapped.is_(None)
            )
        )
