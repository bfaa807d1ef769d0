"""Paged KV cache with hashed-block prefix reuse (vLLM v1's design at a smaller scale).

One preallocated pool per K and V: ``[L, NB, BS, Hkv, hd]`` (L layers, NB blocks, BS tokens per
block, Hkv KV heads, hd head dim). A sequence owns an ordered list of block ids (its block table).
Block 0 is the null block: never allocated, always zero, it pads block tables of shorter sequences.

Prefix reuse: every *full* block gets a chained hash ``H(parent, token ids, media in the block)``;
a new prompt walks its own chain and takes every block whose hash is cached (reference counted, so
concurrent requests share them). Blocks nobody references but that still hold a hashed prefix wait
in an LRU list and are evicted only when a fresh block is needed. The pool size is fixed by the
memory budget, so a request that cannot fit is refused up front (``CacheFull``), never an OOM.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

import torch

from omni_agent.engine.request import CacheFull

NULL_BLOCK = 0  # padding block for block tables; keeps masked keys finite (zeros), never handed out


def hash_block(parent: bytes, token_ids: Sequence[int], extras: Sequence[Any] = ()) -> bytes:
    """Chained block hash: equal hashes mean equal tokens *and* equal media from the start."""
    h = hashlib.sha256(parent)
    h.update(struct.pack(f"<{len(token_ids)}q", *token_ids))
    for e in extras:
        h.update(repr(e).encode())
    return h.digest()


def prompt_block_hashes(token_ids: Sequence[int], mm_items: Sequence[Any], block_size: int,
                        start_hashes: Sequence[bytes] = ()) -> list[bytes]:
    """Hashes of every full block of ``token_ids``, continuing a chain already computed.

    Media enter the hash of each block they overlap, by content hash and layout (grid, placement), so
    two prompts with the same placeholder tokens but different images never share a block.
    """
    hashes = list(start_hashes)
    parent = hashes[-1] if hashes else b""
    for b in range(len(hashes), len(token_ids) // block_size):
        lo, hi = b * block_size, (b + 1) * block_size
        extras = [_mm_key(it) for it in mm_items if it.offset < hi and it.offset + it.length > lo]
        parent = hash_block(parent, token_ids[lo:hi], extras)
        hashes.append(parent)
    return hashes


def _mm_key(item: Any) -> tuple:
    grid = getattr(item, "grid_thw", None)
    grid = tuple(int(x) for x in torch.as_tensor(grid).flatten().tolist()) if grid is not None else None
    return (item.kind, item.content_hash, item.offset, item.length, grid,
            getattr(item, "second_per_grid", None))


class PagedKVCache:
    """The block pool, its allocator and the prefix-hash index.

    Args:
        num_layers: decoder layers (L).
        num_kv_heads: KV heads per layer (Hkv).
        head_dim: per-head width (hd).
        budget_bytes: memory for K and V together; sets the number of blocks.
        block_size: tokens per block (BS).
        device: torch device of the pool.
        dtype: pool dtype (the model's).
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, budget_bytes: int, *,
                 block_size: int = 16, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        elem = torch.empty((), dtype=dtype).element_size()
        self.block_size = block_size
        self.bytes_per_block = 2 * num_layers * block_size * num_kv_heads * head_dim * elem
        self.num_blocks = int(budget_bytes // self.bytes_per_block)
        if self.num_blocks < 2:
            raise ValueError(f"KV cache budget of {budget_bytes} bytes holds fewer than two blocks "
                             f"of {self.bytes_per_block} bytes")
        shape = (num_layers, self.num_blocks, block_size, num_kv_heads, head_dim)
        # empty, not zeros: pages of a CPU pool become resident only when a block is first used, so a
        # generous budget costs nothing until it fills. Each block is zeroed on first use instead
        # (stale NaN garbage in a masked tail would still poison ``probs @ V``).
        self.k = torch.empty(shape, device=device, dtype=dtype)  # [L, NB, BS, Hkv, hd]
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self._zeroed = [False] * self.num_blocks
        self._zero(NULL_BLOCK)
        self.ref = [0] * self.num_blocks
        self.block_hash: dict[int, bytes] = {}
        self.hash_to_block: dict[bytes, int] = {}
        self.free: deque[int] = deque(range(1, self.num_blocks))  # fresh, unhashed, unreferenced
        self.evictable: OrderedDict[int, None] = OrderedDict()  # unreferenced but holding a prefix (LRU first)
        self.hits = 0
        self.queries = 0
        self.evictions = 0

    def _zero(self, block: int) -> None:
        if not self._zeroed[block]:
            self.k[:, block].zero_()
            self.v[:, block].zero_()
            self._zeroed[block] = True

    # --- accounting -------------------------------------------------------------------------------
    @property
    def capacity_tokens(self) -> int:
        return (self.num_blocks - 1) * self.block_size

    @property
    def num_used_blocks(self) -> int:
        """Blocks referenced by live requests (excludes the null block and reusable prefixes)."""
        return self.num_blocks - 1 - len(self.free) - len(self.evictable)

    @property
    def num_available_blocks(self) -> int:
        return len(self.free) + len(self.evictable)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # --- prefix index -----------------------------------------------------------------------------
    def lookup(self, hashes: Sequence[bytes]) -> list[int]:
        """Longest run of cached blocks matching ``hashes`` from the start (not yet referenced)."""
        blocks = []
        for h in hashes:
            b = self.hash_to_block.get(h)
            if b is None:
                break
            blocks.append(b)
        return blocks

    def commit(self, block: int, h: bytes) -> None:
        """Publish a full block under its hash so later prompts can reuse it."""
        if block in self.block_hash or h in self.hash_to_block:
            return  # already published, or an identical block computed concurrently owns the hash
        self.block_hash[block] = h
        self.hash_to_block[h] = block

    # --- allocation -------------------------------------------------------------------------------
    def acquire(self, cached: Sequence[int], num_new: int) -> list[int]:
        """Reference ``cached`` prefix blocks and allocate ``num_new`` fresh ones, all or nothing.

        Raises:
            CacheFull: not enough free or evictable blocks.
        """
        reusable = sum(1 for b in cached if self.ref[b] == 0)  # those leave the evictable list
        if num_new > self.num_available_blocks - reusable:
            raise CacheFull(f"KV cache full: need {num_new} blocks of {self.block_size} tokens, "
                            f"{self.num_available_blocks - reusable} available")
        for b in cached:
            if self.ref[b] == 0:
                self.evictable.pop(b, None)
            self.ref[b] += 1
        fresh = []
        for _ in range(num_new):
            if self.free:
                b = self.free.popleft()
            else:  # evict the least recently used prefix block
                b, _ = self.evictable.popitem(last=False)
                del self.hash_to_block[self.block_hash.pop(b)]
                self.evictions += 1
            self._zero(b)
            self.ref[b] = 1
            fresh.append(b)
        return list(cached) + fresh

    def release(self, blocks: Sequence[int]) -> None:
        """Drop one reference per block; tail blocks go to the LRU end first so they are evicted first."""
        for b in reversed(blocks):
            self.ref[b] -= 1
            if self.ref[b] == 0:
                if b in self.block_hash:
                    self.evictable[b] = None
                else:
                    self.free.append(b)

    def reset_prefix_cache(self) -> None:
        """Forget every reusable prefix (blocks in use keep their data)."""
        for b in list(self.evictable):
            del self.hash_to_block[self.block_hash.pop(b)]
            self.free.append(b)
        self.evictable.clear()


class BatchKV:
    """The ``KVCache.update`` protocol for one model step over a batch of paged sequences.

    Args:
        cache: the pool.
        block_tables: ``[B, nb]`` block ids per row (padded with the null block).
        slots: ``[B, Tn]`` flat slot (block * BS + offset) where each new token's K/V goes.
        valid: ``[B, Tn]`` bool, False for row padding (its K/V are not written); None means all valid.
    """

    def __init__(self, cache: PagedKVCache, block_tables: torch.Tensor, slots: torch.Tensor,
                 valid: torch.Tensor | None = None):
        self.cache = cache
        self.block_tables = block_tables
        self.valid = None if valid is None or bool(valid.all()) else valid.reshape(-1)
        self.slots = slots.reshape(-1) if self.valid is None else slots.reshape(-1)[self.valid]

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cache
        B, H, Tn, hd = k.shape  # noqa: N806 - shape names
        k_flat = c.k[layer_idx].view(-1, H, hd)  # [NB*BS, Hkv, hd]
        v_flat = c.v[layer_idx].view(-1, H, hd)
        k_new = k.transpose(1, 2).reshape(B * Tn, H, hd)
        v_new = v.transpose(1, 2).reshape(B * Tn, H, hd)
        if self.valid is not None:
            k_new, v_new = k_new[self.valid], v_new[self.valid]
        k_flat[self.slots] = k_new.to(k_flat.dtype)
        v_flat[self.slots] = v_new.to(v_flat.dtype)
        nb = self.block_tables.shape[1]
        k_all = c.k[layer_idx][self.block_tables].view(B, nb * c.block_size, H, hd).transpose(1, 2)
        v_all = c.v[layer_idx][self.block_tables].view(B, nb * c.block_size, H, hd).transpose(1, 2)
        return k_all, v_all  # [B, Hkv, Tkv, hd] each
