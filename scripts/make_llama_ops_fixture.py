#!/usr/bin/env python3
"""Reference values for the Llama family's ops, computed with transformers.

Writes tests/data/llama-ops/ops_ref.json (run from the repo root):

  python3 scripts/make_llama_ops_fixture.py

Made with transformers 5.25.0 and torch 2.15.0 on CPU, float32 throughout.
Every number is a float32 written as the shortest decimal that reads back as
the same float32 (exact in f64), so the tests can compare bit for bit where
that is meaningful.

  "inv_freq": [{"head_dim", "rope_theta", "rope_scaling" (null or a dict as in
      config.json), "inv_freq"}]: ROPE_INIT_FUNCTIONS[rope_type](LlamaConfig),
      i.e. _compute_default_rope_parameters (through LlamaRotaryEmbedding's
      compute_default_rope_parameters), _compute_linear_scaling_rope_parameters,
      _compute_llama3_parameters.
  "rope": one case of LlamaRotaryEmbedding.forward + apply_rotary_pos_emb:
      q (NH, T, HD), k (NKV, T, HD) at position_ids, the llama3 scaling of
      "rope_config"; q_embed, k_embed; and for upstream gradients dq_embed,
      dk_embed the autograd gradients dq, dk.
  "rmsnorm": LlamaRMSNorm(C, eps) with a random weight on x (N, C): out, and
      for dout the autograd gradients dx, dweight.
  "swiglu": ACT2FN["silu"](gate) * up (LlamaMLP's product) on gate, up (N, F):
      out, and for dout the autograd gradients dgate, dup.
"""

import json
import os
import re

import numpy as np
import torch
import transformers
from transformers import LlamaConfig
from transformers.activations import ACT2FN
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

OUT = os.path.join("tests", "data", "llama-ops", "ops_ref.json")


def f32_list(t):
    """A float32 tensor as a flat list of Python floats (exact)."""
    a = t.detach().to(torch.float32).reshape(-1).numpy()
    return [float(np.float32(x)) for x in a]


def config(head_dim, theta, scaling):
    params = {"rope_theta": theta, "rope_type": "default"}
    if scaling is not None:
        params.update(scaling)
    return LlamaConfig(
        hidden_size=4 * head_dim,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=131072,
        rope_parameters=params,
    )


def inv_freq_of(cfg):
    rope_type = cfg.rope_parameters["rope_type"]
    if rope_type == "default":
        inv, scaling = LlamaRotaryEmbedding.compute_default_rope_parameters(cfg)
    else:
        inv, scaling = ROPE_INIT_FUNCTIONS[rope_type](cfg, "cpu")
    assert inv.dtype == torch.float32 and scaling == 1.0
    return inv


LLAMA31 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
LLAMA32 = dict(LLAMA31, factor=32.0)
# Small and odd: head dim 12 spans all three llama3 regimes; 100 / 1.5 and
# 100 / 3.5 are not exact in binary.
LLAMA3_ODD = {
    "rope_type": "llama3",
    "factor": 6.0,
    "low_freq_factor": 1.5,
    "high_freq_factor": 3.5,
    "original_max_position_embeddings": 100,
}
INV_FREQ_CASES = [
    (64, 10000.0, None),  # SmolLM-135M, TinyLlama
    (128, 1000000.0, None),  # Qwen2, Mistral
    (10, 10000.0, None),
    (12, 10000.0, {"rope_type": "linear", "factor": 4.0}),
    (128, 10000.0, {"rope_type": "linear", "factor": 2.5}),
    (128, 500000.0, LLAMA31),  # Llama 3.1 8B
    (64, 500000.0, LLAMA32),  # Llama 3.2 1B
    (12, 10000.0, LLAMA3_ODD),
]


def main():
    torch.manual_seed(21)
    out = {"transformers": transformers.__version__, "torch": torch.__version__}

    out["inv_freq"] = [
        {
            "head_dim": hd,
            "rope_theta": theta,
            "rope_scaling": scaling,
            "inv_freq": f32_list(inv_freq_of(config(hd, theta, scaling))),
        }
        for hd, theta, scaling in INV_FREQ_CASES
    ]

    # RoPE on q and k heads, rows at scattered positions (large ones too).
    nh, nkv, hd = 3, 1, 12
    positions = [0, 1, 7, 300, 4097, 65000]
    t = len(positions)
    cfg = config(hd, 10000.0, LLAMA3_ODD)
    rotary = LlamaRotaryEmbedding(cfg)
    q = (torch.rand(1, nh, t, hd) * 4 - 2).requires_grad_()
    k = (torch.rand(1, nkv, t, hd) * 4 - 2).requires_grad_()
    pos_ids = torch.tensor([positions])
    cos, sin = rotary(q, pos_ids)
    q_embed, k_embed = apply_rotary_pos_emb(q, k, cos, sin)
    dq_embed = torch.rand_like(q_embed) * 2 - 1
    dk_embed = torch.rand_like(k_embed) * 2 - 1
    (q_embed * dq_embed).sum().add((k_embed * dk_embed).sum()).backward()
    out["rope"] = {
        "nh": nh,
        "nkv": nkv,
        "hd": hd,
        "rope_theta": 10000.0,
        "rope_scaling": LLAMA3_ODD,
        "positions": positions,
        "q": f32_list(q[0]),
        "k": f32_list(k[0]),
        "q_embed": f32_list(q_embed[0]),
        "k_embed": f32_list(k_embed[0]),
        "dq_embed": f32_list(dq_embed[0]),
        "dk_embed": f32_list(dk_embed[0]),
        "dq": f32_list(q.grad[0]),
        "dk": f32_list(k.grad[0]),
    }

    # RMSNorm.
    n, c, eps = 5, 13, 1e-6
    norm = LlamaRMSNorm(c, eps=eps)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(c) + 0.5)
    x = (torch.rand(n, c) * 6 - 3 + torch.arange(n)[:, None]).requires_grad_()
    y = norm(x)
    dout = torch.rand(n, c) * 2 - 1
    (y * dout).sum().backward()
    out["rmsnorm"] = {
        "n": n,
        "c": c,
        "eps": eps,
        "x": f32_list(x),
        "weight": f32_list(norm.weight),
        "out": f32_list(y),
        "dout": f32_list(dout),
        "dx": f32_list(x.grad),
        "dweight": f32_list(norm.weight.grad),
    }

    # SwiGLU: silu(gate) * up, with large and tiny gates.
    n, f = 4, 9
    gate = torch.rand(n, f) * 16 - 8
    gate[0, :6] = torch.tensor([0.0, -0.0, 30.0, -30.0, 100.0, -100.0])
    gate.requires_grad_()
    up = (torch.rand(n, f) * 4 - 2).requires_grad_()
    y = ACT2FN["silu"](gate) * up
    dout = torch.rand(n, f) * 2 - 1
    (y * dout).sum().backward()
    out["swiglu"] = {
        "n": n,
        "f": f,
        "gate": f32_list(gate),
        "up": f32_list(up),
        "out": f32_list(y),
        "dout": f32_list(dout),
        "dgate": f32_list(gate.grad),
        "dup": f32_list(up.grad),
    }

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    text = json.dumps(out, indent=1)
    # Lists of numbers on one line each.
    text = re.sub(
        r"\[\s*([-+0-9.eE,\s]+?)\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    )
    with open(OUT, "w") as fh:
        fh.write(text + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
