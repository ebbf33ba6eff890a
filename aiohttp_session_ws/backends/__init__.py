"""Backends: where a registry keeps cluster state and how its nodes talk."""

from .base import Backend, FrameHandler
from .memory import MemoryBackend, MemoryHub

__all__ = ["Backend", "FrameHandler", "MemoryBackend", "MemoryHub"]
