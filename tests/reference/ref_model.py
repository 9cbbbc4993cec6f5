"""Reference Mistral transformer forward with LoRA (spec §4, §5), float32 numpy.

Plain full-sequence computation, no KV cache: every call recomputes the whole sequence, which is
the simplest form that is obviously equal to what the spec describes. Inputs are embeddings (token
rows or injected vectors), a 0/1 attention mask for padding and absolute RoPE positions.
"""

import numpy as np

F32 = np.float32
LORA_MODULES = ("q", "k", "v", "o", "gate", "up", "down")


class Hparams:
    """Transformer shape and constants, normally read from the base config.json."""

    def __init__(self, hidden, layers, heads, kv_heads, ffn, vocab, eps=1e-5, theta=1e6,
                 head_dim=None):
        self.hidden = hidden
        self.layers = layers
        self.heads = heads
        self.kv_heads = kv_heads
        self.ffn = ffn
        self.vocab = vocab
        self.eps = float(eps)
        self.theta = float(theta)
        self.head_dim = head_dim if head_dim else hidden // heads
        if heads % kv_heads != 0:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")


class Weights:
    """float32 tensors in PyTorch [out, in] layout.

    layers[i] is a dict with keys attn_norm, q, k, v, o, mlp_norm, gate, up, down.
    """

    def __init__(self, hp, embed, lm_head, norm, layers):
        self.hp = hp
        self.embed = embed
        self.lm_head = lm_head
        self.norm = norm
        self.layers = layers


class Adapter:
    """One LoRA adapter: mods[(layer, module)] = (A [r, in], B [out, r]); missing modules add 0."""

    def __init__(self, name, mods, scaling):
        self.name = name
        self.mods = mods
        self.scaling = F32(scaling)

    def copy(self, name):
        return Adapter(name, dict(self.mods), self.scaling)


def rms_norm(x, w, eps):
    """w ⊙ x / sqrt(mean(x²) + eps) over the last axis (statistic in float32)."""
    ms = np.mean(np.square(x, dtype=F32), axis=-1, keepdims=True, dtype=F32)
    inv = (F32(1) / np.sqrt(ms + F32(eps))).astype(F32)  # HF: x * rsqrt(var + eps)
    return (x * inv).astype(F32) * w


def silu(z):
    return (z / (F32(1) + np.exp(-z))).astype(F32)


def linear(h, w, layer, module, adapters):
    """h·Wᵀ + Σ over active adapters of scaling·((h·Aᵀ)·Bᵀ) (spec §5)."""
    y = h @ w.T
    for ad in adapters:
        ab = ad.mods.get((layer, module))
        if ab is not None:
            a, b = ab
            y = y + ad.scaling * ((h @ a.T) @ b.T)
    return y.astype(F32)


def rope_tables(positions, head_dim, theta):
    """cos/sin [B, T, head_dim] for HF rotate-half RoPE; inv_freq and angles in float32."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(F32) / F32(head_dim)
    inv_freq = (F32(1.0) / (F32(theta) ** exponents)).astype(F32)
    ang = positions.astype(F32)[..., None] * inv_freq  # [B, T, d/2]
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang).astype(F32), np.sin(ang).astype(F32)


def apply_rope(x, cos, sin):
    """x [B, T, heads, d]: y[m] = x[m]c − x[m+d/2]s, y[m+d/2] = x[m+d/2]c + x[m]s."""
    half = x.shape[-1] // 2
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * cos[:, :, None, :] + rot * sin[:, :, None, :]).astype(F32)


def attention_mask(mask):
    """allowed[b, t, s] = s ≤ t and mask[b, s] == 1 (causal + key padding)."""
    t = mask.shape[1]
    causal = np.tril(np.ones((t, t), dtype=bool))
    return causal[None, :, :] & (mask[:, None, :] != 0)


def attention(q, k, v, allowed):
    """q [B,T,nh,d], k/v [B,T,nkv,d]; query head j reads KV head j // (nh/nkv)."""
    nh, nkv, d = q.shape[2], k.shape[2], q.shape[3]
    group = nh // nkv
    k = np.repeat(k, group, axis=2)  # head j -> kv head j // group
    v = np.repeat(v, group, axis=2)
    qh = q.transpose(0, 2, 1, 3)  # [B, nh, T, d]
    kh = k.transpose(0, 2, 3, 1)  # [B, nh, d, T]
    vh = v.transpose(0, 2, 1, 3)
    scores = (qh @ kh) * F32(1.0 / np.sqrt(d))  # [B, nh, T, T]
    allow = allowed[:, None, :, :]
    scores = np.where(allow, scores, -np.inf)
    mx = np.max(scores, axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, F32(0))  # rows with no allowed key (pad queries)
    p = np.where(allow, np.exp(scores - mx), F32(0)).astype(F32)
    s = np.sum(p, axis=-1, keepdims=True)
    p = p / np.where(s > 0, s, F32(1))  # all-masked rows give a zero output
    out = p @ vh  # [B, nh, T, d]
    return out.transpose(0, 2, 1, 3).astype(F32)


def forward(w, x, mask, positions, adapters=()):
    """Runs all layers on embeddings x [B, T, H]; returns the final-norm states [B, T, H].

    These are `hidden_states[-1]` of the spec (§4): the tensor that feeds lm_head.
    """
    hp = w.hp
    x = np.asarray(x, dtype=F32)
    b, t, _ = x.shape
    allowed = attention_mask(np.asarray(mask))
    cos, sin = rope_tables(np.asarray(positions), hp.head_dim, hp.theta)
    d = hp.head_dim
    for i, lw in enumerate(w.layers):
        h = rms_norm(x, lw["attn_norm"], hp.eps)
        q = linear(h, lw["q"], i, "q", adapters).reshape(b, t, hp.heads, d)
        k = linear(h, lw["k"], i, "k", adapters).reshape(b, t, hp.kv_heads, d)
        v = linear(h, lw["v"], i, "v", adapters).reshape(b, t, hp.kv_heads, d)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        a = attention(q, k, v, allowed).reshape(b, t, hp.heads * d)
        x = (x + linear(a, lw["o"], i, "o", adapters)).astype(F32)
        h = rms_norm(x, lw["mlp_norm"], hp.eps)
        g = silu(linear(h, lw["gate"], i, "gate", adapters))
        u = linear(h, lw["up"], i, "up", adapters)
        x = (x + linear((g * u).astype(F32), lw["down"], i, "down", adapters)).astype(F32)
    return rms_norm(x, w.norm, hp.eps)


def logits(w, out):
    """out · lm_headᵀ for final-norm states out [..., H]."""
    return (out @ w.lm_head.T).astype(F32)
