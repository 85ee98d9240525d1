"""Read-only checkpoint views that present a checkpoint under a family's canonical names, for every family.

A family's name table (`jimm.io.state.Slot`s) is written against one naming, the classic on-disk names that
transformers saves. Checkpoints arrive in others: transformers-v5 in-memory names (`Renamed`, one to one) and
foreign layouts such as timm's or the original research code's (`ConvertedSource`, built from `Rule`s that may
map one tensor to several, like a fused qkv, or several to one). The strict checks and the streaming load then
run unchanged on the view. Views are strict themselves: a tensor no rule uses, or one a rule needs and the file
lacks, is an error naming the foreign names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import jax
import numpy as np

from ..io.readers import CheckpointSource

Convert = Callable[..., tuple[np.ndarray, ...]]


class Renamed(CheckpointSource):
    """A view under `rename(name)` for every tensor (e.g. transformers-v5 in-memory names -> classic names)."""

    def __init__(self, raw: CheckpointSource, rename: Callable[[str], str]):
        self.raw = raw
        self.names = {rename(name): name for name in raw.entries()}
        if len(self.names) != len(raw.entries()):
            raise ValueError("checkpoint holds both classic and transformers-v5 names for the same tensors")

    def entries(self):
        entries = self.raw.entries()
        return {ours: entries[theirs] for ours, theirs in self.names.items()}

    def read(self, name, out=None):
        return self.raw.read(self.names[name], out=out)

    def close(self) -> None:
        self.raw.close()


@dataclasses.dataclass(frozen=True)
class Rule:
    """Foreign tensors `sources` <-> HF tensors `hf`: `to_hf(*foreign) -> hf tuple`, `from_hf(*hf) -> foreign tuple`.

    Usually one to one; timm's fused qkv is one to three, a MAP head's separate key/value is two to one.
    `to_hf` must also run on `jax.ShapeDtypeStruct`s (slicing, reshapes, `jnp` ops) so shapes are known unread.
    """

    sources: tuple[str, ...]
    hf: tuple[str, ...]
    to_hf: Convert
    from_hf: Convert


def same(source: str, hf: str) -> Rule:
    return Rule((source,), (hf,), lambda a: (a,), lambda a: (a,))


def split_rows(parts: int) -> Convert:
    """Split axis 0 into `parts` equal pieces (a fused qkv weight or bias -> query, key, value)."""

    def split(a):
        n = a.shape[0] // parts
        return tuple(a[i * n : (i + 1) * n] for i in range(parts))

    return split


def concat_rows(*parts: np.ndarray) -> tuple[np.ndarray]:
    """The inverse of `split_rows`: one tensor stacked along axis 0."""
    return (np.concatenate(parts, axis=0),)


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


__all__ = [
    "ConvertedSource",
    "FormatMismatchError",
    "Renamed",
    "Rule",
    "concat_rows",
    "same",
    "split_rows",
    "to_foreign",
]
