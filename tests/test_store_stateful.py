"""ContentStore against a dict model under random put/delete/open/verify sequences."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    rule,
)

from streamstore import ContentStore, HashMismatchError, ObjectNotFoundError

# A small pool of contents so that puts collide (dedupe) and deletes hit.
CONTENTS = st.sampled_from([b"", b"a", b"b", b"ab", b"\x00" * 1000, bytes(range(256)) * 300])
METADATA = st.none() | st.dictionaries(st.sampled_from(["name", "type", "n"]),
                                       st.integers(0, 9) | st.text(max_size=5), max_size=2)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ContentStoreModel(RuleBasedStateMachine):
    digests = Bundle("digests")

    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="streamstore-stateful-")
        self.store = ContentStore(self.root, durable=False)
        self.model: dict[str, tuple[bytes, dict[str, Any] | None]] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    @rule(target=digests, data=CONTENTS, metadata=METADATA, check=st.booleans(),
          upper=st.booleans())
    def put(self, data: bytes, metadata: dict[str, Any] | None, check: bool,
            upper: bool) -> str:
        digest = sha(data)
        expected = (digest.upper() if upper else digest) if check else None
        info = self.store.put(data, metadata=metadata, expected_sha256=expected)
        old_meta = self.model.get(digest, (b"", None))[1]
        # Metadata is set once: the first put that brings some wins.
        new_meta = old_meta if old_meta is not None else metadata
        self.model[digest] = (data, new_meta)
        assert (info.sha256, info.size, info.metadata) == (digest, len(data), new_meta or {})
        return digest

    @rule(data=CONTENTS, other=CONTENTS)
    def put_wrong_digest(self, data: bytes, other: bytes) -> None:
        if data == other:
            return
        with pytest.raises(HashMismatchError):
            self.store.put(data, expected_sha256=sha(other))

    @rule(target=digests, data=CONTENTS)
    def unknown(self, data: bytes) -> Any:
        return multiple(sha(data + b"!never stored"))

    @rule(digest=consumes(digests))
    def delete(self, digest: str) -> None:
        assert self.store.delete(digest) is (digest in self.model)
        self.model.pop(digest, None)

    @rule(digest=digests)
    def read(self, digest: str) -> None:
        if digest in self.model:
            with self.store.open(digest) as f:
                assert f.read() == self.model[digest][0]
            info = self.store.info(digest)
            assert info.metadata == (self.model[digest][1] or {})
            assert info.size == len(self.model[digest][0])
        else:
            with pytest.raises(ObjectNotFoundError):
                self.store.open(digest)
            with pytest.raises(KeyError):
                self.store.info(digest)

    @rule(digest=digests)
    def contains(self, digest: str) -> None:
        assert (digest in self.store) == (digest in self.model)
        assert (digest.upper() in self.store) == (digest in self.model)

    @rule()
    def verify(self) -> None:
        assert self.store.verify() == []

    @invariant()
    def same_keys(self) -> None:
        assert len(self.store) == len(self.model)
        assert sorted(self.store) == sorted(self.model)


ContentStoreModel.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
test_content_store_matches_a_dict = ContentStoreModel.TestCase
