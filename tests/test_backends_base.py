"""The Backend base class: one registry per backend, clear errors when misused."""

from __future__ import annotations

import pytest

from aiohttp_session_ws import MemoryBackend, SessionWSRegistry


def test_a_backend_serves_one_registry() -> None:
    backend = MemoryBackend()
    registry = SessionWSRegistry(backend=backend)
    assert backend.node_id == registry.node_id
    with pytest.raises(RuntimeError, match="one backend per registry"):
        SessionWSRegistry(backend=backend)


def test_an_unattached_backend_says_how_to_attach_it() -> None:
    with pytest.raises(RuntimeError, match=r"SessionWSRegistry\(backend=...\)"):
        _ = MemoryBackend().node_id


async def test_deliver_without_a_registry_drops_the_frame() -> None:
    await MemoryBackend().deliver(b"{}")  # nothing attached: nothing to do
