"""Checkpoint layouts other than Hugging Face's, presented to the strict HF loader under HF names.

Each format module (`timm`, `big_vision`) holds a documented name table: a list of `Rule`s, each mapping
tensor(s) of the foreign layout to tensor(s) of jimm's HF layout (`to_hf`), with the inverse (`from_hf`)
used to write that layout. Loading wraps the foreign checkpoint in a `ConvertedSource`, a read-only view that
lists and reads tensors under HF names, so the HF loader's strict checks, head handling and streaming
placement apply unchanged. The view is strict itself: a foreign tensor no rule uses, or one a rule needs and
the file lacks, is an error naming the foreign names.

HF names for the variants HF ViT lacks (jimm's extension, used by `save_pretrained` for such models):
`embeddings.distillation_token` (DeiT), `embeddings.register_tokens` and `encoder.layer.N.layer_scale{1,2}
.lambda1` (DINOv2), `encoder.layer.N.attention.attention.{q,k}_norm.{weight,bias}`, `fc_norm.{weight,bias}`,
`attn_pool.{latent, q, kv, proj, norm, mlp.fc1, mlp.fc2}` (timm's `AttentionPoolLatent`), and DeiT's heads
`cls_classifier` / `distillation_classifier`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import jax
import numpy as np

from ....common.resample import resample_pos_embed
from ....io.checkpoint import CheckpointSource

Convert = Callable[..., tuple[np.ndarray, ...]]


@dataclasses.dataclass(frozen=True)
class Rule:
    """Foreign tensors `sources` <-> HF tensors `hf`: `to_hf(*foreign) -> hf tuple`, `from_hf(*hf) -> foreign tuple`.

    Usually one to one; timm's fused qkv is one to three, a MAP head's separate key/value is two to one.
    """

    sources: tuple[str, ...]
    hf: tuple[str, ...]
    to_hf: Convert
    from_hf: Convert


def same(source: str, hf: str) -> Rule:
    return Rule((source,), (hf,), lambda a: (a,), lambda a: (a,))


def transposed(source: str, hf: str) -> Rule:
    """A 2-D kernel stored `[in, out]` (flax) for an HF `[out, in]` weight."""
    return Rule((source,), (hf,), lambda a: (a.T,), lambda a: (a.T,))


def to_foreign(rules: Sequence[Rule], hf_tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Write a checkpoint in a foreign layout from HF-named tensors (the inverse table; used by tests and tools)."""
    out: dict[str, np.ndarray] = {}
    for rule in rules:
        if all(name in hf_tensors for name in rule.hf):
            for name, array in zip(rule.sources, rule.from_hf(*(hf_tensors[n] for n in rule.hf)), strict=True):
                out[name] = np.ascontiguousarray(array)
    return out


class FormatMismatchError(ValueError):
    """A foreign checkpoint does not match the model its name table describes."""


class ConvertedSource(CheckpointSource):
    """A read-only view of a foreign checkpoint under HF names, built from a name table (strict)."""

    def __init__(self, raw: CheckpointSource, rules: Sequence[Rule], *, format_name: str, optional: Iterable[str] = ()):
        entries = raw.entries()
        optional = set(optional)
        used = {name for r in rules for name in r.sources}
        missing = sorted(n for n in used if n not in entries and n not in optional)
        unexpected = sorted(set(entries) - used)
        if missing or unexpected:
            lines = [f"{format_name} checkpoint does not match the model its names describe:"]
            if missing:
                lines += [f"  {len(missing)} missing tensor(s):", *(f"    {n}" for n in missing)]
            if unexpected:
                lines += [f"  {len(unexpected)} unexpected tensor(s):", *(f"    {n}" for n in unexpected)]
            raise FormatMismatchError("\n".join(lines))
        self.raw = raw
        self._where: dict[str, tuple[Rule, int]] = {}
        self._entries: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self._cache: dict[str, np.ndarray] = {}
        for rule in rules:
            if not all(name in entries for name in rule.sources):
                continue
            structs = [jax.ShapeDtypeStruct(tuple(entries[n][0]), entries[n][1]) for n in rule.sources]
            outs = jax.eval_shape(rule.to_hf, *structs)
            for k, (name, out) in enumerate(zip(rule.hf, outs, strict=True)):
                self._where[name] = (rule, k)
                self._entries[name] = (tuple(out.shape), np.dtype(entries[rule.sources[0]][1]))

    def entries(self):
        return dict(self._entries)

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        rule, k = self._where[name]
        array = np.ascontiguousarray(rule.to_hf(*(self._read(n) for n in rule.sources))[k])
        if out is None:
            return array
        out.reshape(array.shape)[...] = array
        return out

    def _read(self, name: str) -> np.ndarray:
        # A few recent tensors stay cached: scanned layouts hold every layer in one tensor, and q/k/v alternate.
        if name not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[name] = self.raw.read(name)
        return self._cache[name]

    def close(self) -> None:
        self.raw.close()


class ResampledPosEmbed(CheckpointSource):
    """A view whose position embeddings are resampled to a new grid (fine-tuning at a new resolution)."""

    def __init__(self, raw: CheckpointSource, name: str, old_hw, new_hw, num_prefix_tokens: int, antialias: bool):
        self.raw, self.name = raw, name
        self.old_hw, self.new_hw, self.num_prefix_tokens = tuple(old_hw), tuple(new_hw), num_prefix_tokens
        self.antialias = antialias

    def entries(self):
        entries = self.raw.entries()
        if self.name in entries:
            (one, _, d), dtype = entries[self.name]
            entries[self.name] = ((one, self.num_prefix_tokens + self.new_hw[0] * self.new_hw[1], d), dtype)
        return entries

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        if name != self.name:
            return self.raw.read(name, out=out)
        array = self.raw.read(name)
        resampled = resample_pos_embed(
            np.asarray(array, np.float32),
            self.old_hw,
            self.new_hw,
            num_prefix_tokens=self.num_prefix_tokens,
            antialias=self.antialias,
        )
        resampled = np.asarray(resampled).astype(array.dtype)
        if out is None:
            return resampled
        out.reshape(resampled.shape)[...] = resampled
        return out

    def close(self) -> None:
        self.raw.close()


__all__ = ["ConvertedSource", "FormatMismatchError", "ResampledPosEmbed", "Rule", "same", "to_foreign", "transposed"]
