"""A hand-written reference ViT forward in timm's semantics, on a timm-named state dict (torch fp64, eager).

Independent of jimm's code: its own LayerNorm, attention, pooling and bicubic (torch's interpolate). Used by
the variant and format tests: jimm model -> timm state dict (inverse name table) -> this forward.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F


def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]


def _attend(q, k, v):  # [B, N, T, H]
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return w @ v


def timm_forward(state: dict, config, x: np.ndarray, *, pre_logits: bool = False) -> np.ndarray:
    """Logits (or pooled features) of a timm ViT given as a state dict, for NHWC images `x`."""
    sd = {k: torch.from_numpy(np.asarray(v, np.float64)) for k, v in state.items()}
    c, eps = config, config.layer_norm_eps
    n_heads = c.num_attention_heads
    act = {"gelu": lambda t: F.gelu(t), "gelu_new": lambda t: F.gelu(t, approximate="tanh")}[c.hidden_act]
    img = torch.from_numpy(np.asarray(x, np.float64)).permute(0, 3, 1, 2)
    ph, pw = c.patch_hw
    t = F.conv2d(img, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=(ph, pw))
    b, d, gh, gw = t.shape
    t = t.flatten(2).transpose(1, 2)
    prefix = [sd[n].expand(b, -1, -1) for n in ("cls_token", "dist_token", "reg_token") if n in sd]
    npt = sum(p.shape[1] for p in prefix)
    pos = sd["pos_embed"]
    pos_prefix = 0 if c.no_embed_class else npt
    old = c.grid_hw
    if (gh, gw) != old:
        grid = pos[:, pos_prefix:].reshape(1, *old, d).permute(0, 3, 1, 2)
        # timm itself passes antialias=True (resample_abs_pos_embed); jimm models loaded from timm do too
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False, antialias=c.pos_embed_antialias)
        pos = torch.cat([pos[:, :pos_prefix], grid.permute(0, 2, 3, 1).reshape(1, gh * gw, d)], dim=1)
    t = torch.cat([*prefix, t + pos], dim=1) if c.no_embed_class else torch.cat([*prefix, t], dim=1) + pos
    for i in range(c.num_hidden_layers):
        p = f"blocks.{i}"
        y = _ln(t, sd, f"{p}.norm1", eps)
        qkv = y @ sd[f"{p}.attn.qkv.weight"].T
        if f"{p}.attn.qkv.bias" in sd:
            qkv = qkv + sd[f"{p}.attn.qkv.bias"]
        q, k, v = qkv.reshape(b, -1, 3, n_heads, d // n_heads).permute(2, 0, 3, 1, 4)
        if f"{p}.attn.q_norm.weight" in sd:
            q, k = _ln(q, sd, f"{p}.attn.q_norm", eps), _ln(k, sd, f"{p}.attn.k_norm", eps)
        y = _linear(_attend(q, k, v).transpose(1, 2).reshape(b, -1, d), sd, f"{p}.attn.proj")
        if f"{p}.ls1.gamma" in sd:
            y = y * sd[f"{p}.ls1.gamma"]
        t = t + y
        y = _linear(act(_linear(_ln(t, sd, f"{p}.norm2", eps), sd, f"{p}.mlp.fc1")), sd, f"{p}.mlp.fc2")
        if f"{p}.ls2.gamma" in sd:
            y = y * sd[f"{p}.ls2.gamma"]
        t = t + y
    if "norm.weight" in sd:
        t = _ln(t, sd, "norm", eps)
    if c.distilled:
        if pre_logits:
            return ((t[:, 0] + t[:, 1]) / 2).numpy()
        return ((_linear(t[:, 0], sd, "head") + _linear(t[:, 1], sd, "head_dist")) / 2).numpy()
    if c.global_pool == "map":
        tokens = t[:, npt:]
        h = d // n_heads
        q = (
            _linear(sd["attn_pool.latent"].expand(b, -1, -1), sd, "attn_pool.q")
            .reshape(b, 1, n_heads, h)
            .transpose(1, 2)
        )
        k, v = _linear(tokens, sd, "attn_pool.kv").reshape(b, -1, 2, n_heads, h).permute(2, 0, 3, 1, 4)
        y = _linear(_attend(q, k, v).transpose(1, 2).reshape(b, 1, d), sd, "attn_pool.proj")
        y = y + _linear(
            act(_linear(_ln(y, sd, "attn_pool.norm", eps), sd, "attn_pool.mlp.fc1")), sd, "attn_pool.mlp.fc2"
        )
        pooled = y[:, 0]
    elif c.global_pool == "avg":
        pooled = t[:, npt:].mean(dim=1)
    else:
        pooled = t[:, 0]
    if "fc_norm.weight" in sd:
        pooled = _ln(pooled, sd, "fc_norm", eps)
    if pre_logits or "head.weight" not in sd:
        return pooled.numpy()
    return _linear(pooled, sd, "head").numpy()
