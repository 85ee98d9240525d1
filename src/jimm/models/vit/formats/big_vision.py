"""Google `.npz` ViT checkpoints (vit_jax and big_vision, flax linen) <-> jimm's HF names.

Name table (npz -> HF; `E` is `Transformer/encoderblock_N/`, or `Transformer/encoderblock/` with a leading
layer axis in big_vision's scanned layout; a leading `params/`, `params/img/` or `opt/target/` is stripped):

| npz (vit_jax / big_vision sub-module index)          | HF                                                  |
|------------------------------------------------------|-----------------------------------------------------|
| `embedding/kernel [ph, pw, C, D]`, `embedding/bias`  | `embeddings.patch_embeddings.projection` (OIHW)     |
| `cls [1, 1, D]`                                      | `embeddings.cls_token`                              |
| `Transformer/posembed_input/pos_embedding` / `pos_embedding` | `embeddings.position_embeddings`            |
| `E LayerNorm_0`                                      | `encoder.layer.N.layernorm_before`                  |
| `E MultiHeadDotProductAttention_{1/0}/{query,key,value}/kernel [D,N,H]` | `...attention.attention.{q,k,v}.weight` |
| `E MultiHeadDotProductAttention_{1/0}/out/kernel [N, H, D]` | `...attention.output.dense.weight`           |
| `E LayerNorm_{2/1}`                                  | `...layernorm_after`                                |
| `E MlpBlock_{3/0}/Dense_0`, `Dense_1` (kernel `[in, out]`) | `...intermediate.dense`, `...output.dense`    |
| `Transformer/encoder_norm`                           | `layernorm`                                         |
| `MAPHead_0/probe`                                     | `attn_pool.latent`                                  |
| `MAPHead_0/MultiHeadDotProductAttention_0/{query, key+value, out}` | `attn_pool.{q, kv, proj}`             |
| `MAPHead_0/LayerNorm_0`, `MAPHead_0/MlpBlock_0/Dense_{0,1}` | `attn_pool.norm`, `attn_pool.mlp.fc{1,2}`    |
| `head/kernel [D, C]`, `head/bias`                    | `classifier`                                        |

LayerNorm `scale` is HF `weight`. Config inference: heads from the query kernel, `no_embed_class` when the
position table has exactly the patch rows (big_vision adds it before the class token), `global_pool` "map" /
"token" (a `cls` token) / "avg" (big_vision's "gap", after the encoder norm), LayerNorm eps 1e-6. The JAX
code used flax's `nn.gelu`, the tanh approximation; jimm infers exact `"gelu"` as timm's and transformers'
conversions of these checkpoints do (pass `config=` with `hidden_act="gelu_new"` for the original's maths).
"""

from __future__ import annotations

import math

from ...views import Rule
from ..config import ViTConfig

PREFIXES = ("opt/target/", "params/img/", "params/")


def strip_prefix(names) -> str:
    """The common wrapper prefix of the npz names ('' when there is none)."""
    for prefix in PREFIXES:
        if f"{prefix}embedding/kernel" in names:
            return prefix
    return ""


def _layout(entries: dict) -> tuple[bool, bool]:
    """(scanned, vit_jax sub-module indices) of a stripped name set."""
    scanned = any(n.startswith("Transformer/encoderblock/") for n in entries)
    vit_jax = any("MultiHeadDotProductAttention_1/" in n for n in entries if n.startswith("Transformer/"))
    return scanned, vit_jax


def rules(config: ViTConfig, *, with_head: bool, scanned: bool, vit_jax: bool, pos_name: str) -> list[Rule]:
    """The npz name table for a model of this config and layout."""
    c = config
    d, n = c.hidden_size, c.num_attention_heads
    h = d // n
    mha, ln2, mlp = (1, 2, 3) if vit_jax else (0, 1, 0)
    out = [
        Rule(("embedding/kernel",), ("embeddings.patch_embeddings.projection.weight",),
             lambda k: (k.transpose(3, 2, 0, 1),), lambda w: (w.transpose(2, 3, 1, 0),)),
        _same("embedding/bias", "embeddings.patch_embeddings.projection.bias"),
        _same(pos_name, "embeddings.position_embeddings"),
    ]  # fmt: skip
    if c.class_token:
        out.append(_same("cls", "embeddings.cls_token"))
    for i in range(c.num_hidden_layers):
        e, hf = ("Transformer/encoderblock/" if scanned else f"Transformer/encoderblock_{i}/"), f"encoder.layer.{i}"
        idx = i if scanned else None

        def rule(src: str, dst: str, to_hf, from_hf, idx=idx, e=e) -> Rule:
            return _indexed(e + src, dst, to_hf, from_hf, idx)

        a = f"MultiHeadDotProductAttention_{mha}/"
        for ours, theirs in (("LayerNorm_0", "layernorm_before"), (f"LayerNorm_{ln2}", "layernorm_after")):
            out += [
                rule(f"{ours}/scale", f"{hf}.{theirs}.weight", _id, _id),
                rule(f"{ours}/bias", f"{hf}.{theirs}.bias", _id, _id),
            ]
        for x in ("query", "key", "value"):
            out.append(rule(f"{a}{x}/kernel", f"{hf}.attention.attention.{x}.weight",
                            lambda k: k.reshape(d, d).T, lambda w: w.T.reshape(d, n, h)))  # fmt: skip
            out.append(rule(f"{a}{x}/bias", f"{hf}.attention.attention.{x}.bias",
                            lambda b: b.reshape(d), lambda b: b.reshape(n, h)))  # fmt: skip
        out.append(rule(f"{a}out/kernel", f"{hf}.attention.output.dense.weight",
                        lambda k: k.reshape(d, d).T, lambda w: w.T.reshape(n, h, d)))  # fmt: skip
        out.append(rule(f"{a}out/bias", f"{hf}.attention.output.dense.bias", _id, _id))
        for k, theirs in ((0, "intermediate.dense"), (1, "output.dense")):
            out.append(rule(f"MlpBlock_{mlp}/Dense_{k}/kernel", f"{hf}.{theirs}.weight", _t, _t))
            out.append(rule(f"MlpBlock_{mlp}/Dense_{k}/bias", f"{hf}.{theirs}.bias", _id, _id))
    out += [
        _same("Transformer/encoder_norm/scale", "layernorm.weight"),
        _same("Transformer/encoder_norm/bias", "layernorm.bias"),
    ]
    if c.global_pool == "map":
        m, a = "MAPHead_0/", "MAPHead_0/MultiHeadDotProductAttention_0/"
        out.append(_same(m + "probe", "attn_pool.latent"))
        out.append(Rule((a + "query/kernel",), ("attn_pool.q.weight",),
                        lambda k: (k.reshape(d, d).T,), lambda w: (w.T.reshape(d, n, h),)))  # fmt: skip
        out.append(
            Rule((a + "query/bias",), ("attn_pool.q.bias",), lambda b: (b.reshape(d),), lambda b: (b.reshape(n, h),))
        )
        out.append(Rule((a + "key/kernel", a + "value/kernel"), ("attn_pool.kv.weight",),
                        lambda k, v: (_cat(k.reshape(d, d).T, v.reshape(d, d).T),),
                        lambda w: (w[:d].T.reshape(d, n, h), w[d:].T.reshape(d, n, h))))  # fmt: skip
        out.append(Rule((a + "key/bias", a + "value/bias"), ("attn_pool.kv.bias",),
                        lambda k, v: (_cat(k.reshape(d), v.reshape(d)),),
                        lambda b: (b[:d].reshape(n, h), b[d:].reshape(n, h))))  # fmt: skip
        out.append(Rule((a + "out/kernel",), ("attn_pool.proj.weight",),
                        lambda k: (k.reshape(d, d).T,), lambda w: (w.T.reshape(n, h, d),)))  # fmt: skip
        out.append(_same(a + "out/bias", "attn_pool.proj.bias"))
        out += [
            _same(m + "LayerNorm_0/scale", "attn_pool.norm.weight"),
            _same(m + "LayerNorm_0/bias", "attn_pool.norm.bias"),
        ]
        for k in (0, 1):
            out.append(Rule((f"{m}MlpBlock_0/Dense_{k}/kernel",), (f"attn_pool.mlp.fc{k + 1}.weight",), _t1, _t1))
            out.append(_same(f"{m}MlpBlock_0/Dense_{k}/bias", f"attn_pool.mlp.fc{k + 1}.bias"))
    if with_head:
        out += [Rule(("head/kernel",), ("classifier.weight",), _t1, _t1), _same("head/bias", "classifier.bias")]
    return out


def _id(a):
    return a


def _t(a):
    return a.T


def _t1(a):
    return (a.T,)


def _cat(*parts):
    import jax.numpy as jnp
    import numpy as np

    return (jnp if any(not isinstance(p, np.ndarray) for p in parts) else np).concatenate(parts, axis=0)


def _same(src: str, dst: str) -> Rule:
    return Rule((src,), (dst,), lambda a: (a,), lambda a: (a,))


def _indexed(src: str, dst: str, to_hf, from_hf, idx: int | None) -> Rule:
    """A rule for one layer; in the scanned layout it reads (and writes) index `idx` of the stacked tensor."""
    if idx is None:
        return Rule((src,), (dst,), lambda a: (to_hf(a),), lambda a: (from_hf(a),))
    return Rule((src,), (dst,), lambda a: (to_hf(a[idx]),), lambda a: (from_hf(a),))


def infer_config(entries: dict) -> tuple[ViTConfig, dict]:
    """A `ViTConfig` and the layout (`scanned`, `vit_jax`, `pos_name`) from stripped npz names and shapes."""
    ph, pw, channels, d = entries["embedding/kernel"][0]
    scanned, vit_jax = _layout(entries)
    mha, mlp = (1, 3) if vit_jax else (0, 0)
    if scanned:
        first = "Transformer/encoderblock/"
        depth = entries[first + "LayerNorm_0/scale"][0][0]
    else:
        first = "Transformer/encoderblock_0/"
        depth = len({n.split("/")[1] for n in entries if n.startswith("Transformer/encoderblock_")})
    heads = entries[f"{first}MultiHeadDotProductAttention_{mha}/query/kernel"][0][-2]
    mlp_dim = entries[f"{first}MlpBlock_{mlp}/Dense_0/kernel"][0][-1]
    pos_name = "pos_embedding" if "pos_embedding" in entries else "Transformer/posembed_input/pos_embedding"
    class_token = "cls" in entries
    rows = entries[pos_name][0][1]
    # big_vision adds the table before prepending any token; vit_jax (posembed_input) covers the class token too
    no_embed_class = math.isqrt(rows) ** 2 == rows and (class_token or pos_name == "pos_embedding")
    grid = math.isqrt(rows - (0 if no_embed_class else int(class_token)))
    pool = "map" if "MAPHead_0/probe" in entries else "token" if class_token else "avg"
    config = ViTConfig(
        hidden_size=d,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=mlp_dim,
        layer_norm_eps=1e-6,
        image_size=grid * ph if ph == pw else (grid * ph, grid * pw),
        patch_size=ph if ph == pw else (ph, pw),
        num_channels=channels,
        num_labels=entries["head/kernel"][0][-1] if "head/kernel" in entries else 0,
        class_token=class_token,
        no_embed_class=no_embed_class,
        global_pool=pool,
    )
    return config, {"scanned": scanned, "vit_jax": vit_jax, "pos_name": pos_name}


def pyloop_to_scan(tensors: dict, depth: int) -> dict:
    """`Transformer/encoderblock_N/...` -> `Transformer/encoderblock/...` stacked on a leading layer axis."""
    import numpy as np

    out = {k: v for k, v in tensors.items() if not k.startswith("Transformer/encoderblock_")}
    names = {k.split("/", 2)[2] for k in tensors if k.startswith("Transformer/encoderblock_0/")}
    for name in names:
        out[f"Transformer/encoderblock/{name}"] = np.stack(
            [tensors[f"Transformer/encoderblock_{i}/{name}"] for i in range(depth)]
        )
    return out


def scan_to_pyloop(tensors: dict) -> dict:
    """The inverse of `pyloop_to_scan`."""
    out = {k: v for k, v in tensors.items() if not k.startswith("Transformer/encoderblock/")}
    for key, value in tensors.items():
        if key.startswith("Transformer/encoderblock/"):
            for i, layer in enumerate(value):
                out[f"Transformer/encoderblock_{i}/{key.split('/', 2)[2]}"] = layer
    return out


__all__ = ["PREFIXES", "infer_config", "pyloop_to_scan", "rules", "scan_to_pyloop", "strip_prefix"]
