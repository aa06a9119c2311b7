"""Payloads encrypted with their case's data key (AES-256-GCM), so the Temporal server, its
exports and backups, and anyone with namespace access see ciphertext.

The SDK hands the codec each payload's serialization context: the workflow id of the case it
belongs to (workflow input and result, signals, updates, queries, the case's activities,
memo, summaries, failures). That picks the key; the key's record binds the namespace and
workflow id as associated data, so a payload moved to another case does not open. Payload
metadata carries only an opaque key id. A payload that is not encrypted (a backend sending
plain JSON) decodes as it is; one whose key was destroyed stays as it is, encrypted.
"""

from __future__ import annotations

import copy
import dataclasses
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Self

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

from activities.keys import KeyStore, MasterKeys
from activities.records import Records

ENCODING = b"binary/encrypted"
ERASED = b"binary/erased"  # what a case whose key is destroyed still says: nothing
KEY_ID = "encryption-key-id"


class SharedPayloadConverter(PydanticPayloadConverter):
    """Pydantic JSON, one instance per process: the SDK builds a payload converter from its
    class for every workflow activation (twice), each with a cold cache of type adapters
    (2 % of a case worker's CPU); this class hands out the one it made first."""

    _one: ClassVar[SharedPayloadConverter | None] = None

    def __new__(cls) -> SharedPayloadConverter:
        if cls._one is None:
            one = super().__new__(cls)
            PydanticPayloadConverter.__init__(one)
            cls._one = one
        return cls._one

    def __init__(self) -> None:
        """Made once, in __new__."""


PLAIN = DataConverter(payload_converter_class=SharedPayloadConverter)
_CASE_CONTEXTS = (WorkflowSerializationContext, ActivitySerializationContext)


class CaseCodec(PayloadCodec, WithSerializationContext):
    def __init__(
        self, keys: KeyStore, namespace: str | None = None, workflow_id: str | None = None
    ) -> None:
        self.keys, self.namespace, self.workflow_id = keys, namespace, workflow_id

    def with_context(self, context: SerializationContext) -> CaseCodec:
        if isinstance(context, _CASE_CONTEXTS) and context.workflow_id:
            return CaseCodec(self.keys, context.namespace, context.workflow_id)
        return self

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        if self.namespace is None or self.workflow_id is None:
            return list(payloads)  # no case to bind to (e.g. a listing): nothing personal
        key = await self.keys.for_case(self.namespace, self.workflow_id)
        if key is None:  # erased: nothing of it leaves in clear, or at all
            return [Payload(metadata={"encoding": ERASED}) for _ in payloads]
        out = []
        for p in payloads:
            nonce = secrets.token_bytes(12)
            sealed = key.aead.encrypt(nonce, p.SerializeToString(), key.aad)
            out.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID: key.key_id.encode()},
                    data=nonce + sealed,
                )
            )
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await decode_one(self.keys, p) for p in payloads]


async def decode_one(keys: KeyStore, p: Payload) -> Payload:
    """The plain payload; as it is when it is not encrypted or its key is gone."""
    if p.metadata.get("encoding") != ENCODING:
        return p
    key = await keys.by_id(p.metadata.get(KEY_ID, b"").decode())
    if key is None:
        return p
    return Payload.FromString(key.aead.decrypt(p.data[:12], p.data[12:], key.aad))


def is_encrypted(p: Payload) -> bool:
    return p.metadata.get("encoding") == ENCODING


@dataclasses.dataclass(frozen=True)
class CaseDataConverter(DataConverter):
    """The SDK binds a converter to its case for every workflow activation, activity and
    client call (the codec picks the key by it). DataConverter's own clone goes through its
    constructor, which makes new payload and failure converters only to replace them (4 %
    of a case worker's CPU); this clone copies the instance and swaps what the context
    changed."""

    def with_context(self, context: SerializationContext) -> Self:
        bound = {}
        for name in ("payload_converter", "payload_codec", "failure_converter", "external_storage"):
            part = getattr(self, name)
            if isinstance(part, WithSerializationContext):
                new = part.with_context(context)
                if new is not part:
                    bound[name] = new
        if not bound:
            return self
        clone = copy.copy(self)
        for name, part in bound.items():
            object.__setattr__(clone, name, part)
        return clone


def data_converter(keys: KeyStore | None) -> DataConverter:
    """The one data converter of every client and worker: pydantic JSON, failures' messages
    and stack traces encoded too, and (with a master key) the case codec."""
    if keys is None:
        return PLAIN
    return CaseDataConverter(
        payload_converter_class=SharedPayloadConverter,
        payload_codec=CaseCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def converter_from_env(dev_folder: Path | None = Path("data")) -> DataConverter:
    """A client's converter: the master key from the environment, or the one `--dev` keeps
    under ./data/ when run beside it; the data keys from $DATABASE_URL's records."""
    masters = MasterKeys.from_env(dev_folder, create=False)
    return data_converter(KeyStore(Records.from_url(immediate=False), masters) if masters else None)
