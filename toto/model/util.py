"""Toto 1.0's `toto.model.util` import path: the KV cache and RMSNorm live in their own modules here."""

from .kv_cache import KVCache
from .transformer import RMSNorm

__all__ = ["KVCache", "RMSNorm"]
