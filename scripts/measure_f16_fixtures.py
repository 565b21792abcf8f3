#!/usr/bin/env python3
"""Measure transformers' own float16 error on wgpipe's test fixtures (f16 storage).

wgpipe can keep weights and activations in f16 on the GPU (accumulating in f32 inside
its kernels). Its f16 tests do not ask for bit-equality with an f32 reference, which
f16 cannot give; they ask that wgpipe's f16 results are about as close to
transformers' f32 results as transformers' *own* f16 computation of the same
checkpoint is:

  - logits: max |wgpipe f16 logits - f32 logits| <= 3 x f16_max_abs_err below;
  - greedy generation on the GPT-2 generation fixture: wgpipe's f16 tokens equal
    transformers' f16 tokens at every step whose top-2 margin exceeds the f16 error.

This script writes those transformers-f16 numbers beside the fixtures. It only reads
the existing fixture files and writes one new file per fixture directory:

  tests/data/<fixture>/f16_ref.json, for each of tiny-gpt2, tiny-gpt2-n-inner,
  tiny-gpt2-4l, tiny-llama, tiny-llama-f16, tiny-llama-bf16, tiny-qwen2, tiny-mistral
  (those that hold input_ids.safetensors):
      {"transformers": version, "torch": version, "input": "input_ids.safetensors",
       "f32_vs_stored_max_abs":  max |f32 logits - logits.safetensors| (a sanity check:
                                 the f32 model reproduces the stored reference),
       "f16_max_abs_err":        max |f16 logits (widened to f32) - f32 logits|,
       "f16_mean_abs_err":       mean of the same,
       "logits_max_abs":         max |f32 logits|}
    f32 logits: AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32,
    attn_implementation="eager"), eval mode, no_grad, model(input_ids).logits on the
    stored [batch, seq] input ids (no attention mask, as the fixture scripts ran it; a
    bf16/f16 checkpoint is widened exactly to f32). f16 logits: the same with
    dtype=torch.float16 (an f32/bf16 checkpoint rounded to f16 on load), all of the
    forward in f16 as transformers runs it on the CPU.

  tests/data/tiny-gpt2-gen/f16_ref.json:
      {"transformers", "torch",
       "cases": [{"prompt_ids": [[id...]...], "max_new_tokens": N,
                  "output_ids_f16": [[id...]...], "margins_f16": [[per step]...],
                  "step_err_f16": [[per step]...]}...],
       "f16_max_abs_err": max over all steps of step_err_f16}
    For every prompt of every case of generate_ref.json, greedy generation by the f16
    model exactly as scripts/make_hf_fixture.py made the f32 references
    (model.generate, do_sample=False, use_cache=True, max_new_tokens=N, eos_token_id
    None, eager attention, each prompt alone: batch 1, no padding). output_ids_f16
    rows are prompt + N tokens. For generated step k (the token at position
    len(prompt) + k): margins_f16[k] = top-1 minus top-2 of that step's f16 logits
    (as generate computed them, with the KV cache), and step_err_f16[k] = max |those
    f16 logits - the f32 model's next-token logits after the same prefix| (the prefix
    being the f16 run's own tokens; the f32 logits from one full forward, no cache).

Deterministic: CPU only, one thread (set OMP_NUM_THREADS=1 too), and
torch.use_deterministic_algorithms(True). Results may change in the last bits with
another torch/transformers version or CPU (f16 CPU kernels differ between ISAs).

Run: OMP_NUM_THREADS=1 python3 scripts/measure_f16_fixtures.py [--data DIR]
"""

import argparse
import json
import os
import re

import torch
import transformers
from safetensors import safe_open
from transformers import AutoModelForCausalLM, GenerationConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LOGIT_FIXTURES = [
    "tiny-gpt2",
    "tiny-gpt2-n-inner",
    "tiny-gpt2-4l",
    "tiny-llama",
    "tiny-llama-f16",
    "tiny-llama-bf16",
    "tiny-qwen2",
    "tiny-mistral",
]
GEN_FIXTURE = "tiny-gpt2-gen"


def versions():
    return {"transformers": transformers.__version__, "torch": torch.__version__}


def load(path, dtype):
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, attn_implementation="eager"
    ).eval()
    got = {p.dtype for p in model.parameters()}
    assert got == {dtype}, f"{path}: asked for {dtype}, parameters are {got}"
    return model


def read_tensor(path, name):
    with safe_open(path, "pt") as f:
        return f.get_tensor(name)


def dump(obj, path):
    """JSON with one line per list of numbers (as make_hf_fixture.py writes)."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    text = re.sub(
        r"\[\s*(-?[0-9][0-9.eE+-]*(?:,\s*-?[0-9][0-9.eE+-]*)*)\s*\]",
        lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]",
        text,
    )
    assert json.loads(text) == obj
    with open(path, "w") as fh:
        fh.write(text + "\n")


def measure_logits(d):
    input_ids = read_tensor(os.path.join(d, "input_ids.safetensors"), "input_ids")
    stored = read_tensor(os.path.join(d, "logits.safetensors"), "logits")
    assert input_ids.dtype == torch.int64 and input_ids.dim() == 2, input_ids.shape
    m32 = load(d, torch.float32)
    m16 = load(d, torch.float16)
    with torch.no_grad():
        l32 = m32(input_ids).logits
        l16 = m16(input_ids).logits
    assert l32.dtype == torch.float32, l32.dtype
    assert l16.dtype == torch.float16, l16.dtype
    assert l32.shape == stored.shape == l16.shape, (l32.shape, stored.shape, l16.shape)
    assert torch.isfinite(l16).all(), f"{d}: non-finite f16 logits"
    err = (l16.float() - l32).abs()
    ref = dict(
        versions(),
        input="input_ids.safetensors",
        f32_vs_stored_max_abs=(l32 - stored).abs().max().item(),
        f16_max_abs_err=err.max().item(),
        f16_mean_abs_err=err.mean().item(),
        logits_max_abs=l32.abs().max().item(),
    )
    # Weights that f16 cannot hold exactly (an f32/bf16 file rounded on load).
    inexact = sum(
        int((p16.float() != p32).sum())
        for p16, p32 in zip(m16.state_dict().values(), m32.state_dict().values())
    )
    total = sum(p.numel() for p in m32.state_dict().values())
    return ref, dict(shape=list(l32.shape), inexact_weights=f"{inexact}/{total}")


def greedy_f16(m16, prompt_ids, n_new):
    config = GenerationConfig(
        do_sample=False,
        use_cache=True,
        max_new_tokens=n_new,
        eos_token_id=None,
        pad_token_id=m16.config.eos_token_id,
        bos_token_id=None,
        return_dict_in_generate=True,
        output_logits=True,
    )
    ids = torch.tensor([prompt_ids], dtype=torch.int64)
    with torch.no_grad():
        out = m16.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    row = out.sequences[0].tolist()
    assert row[: len(prompt_ids)] == prompt_ids and len(row) == len(prompt_ids) + n_new, row
    assert len(out.logits) == n_new
    return row, [step[0] for step in out.logits]


def f32_next_logits(m32, ids):
    with torch.no_grad():
        logits = m32(torch.tensor([ids], dtype=torch.int64), use_cache=False).logits
    assert logits.dtype == torch.float32
    return logits[0, -1]


def measure_gen(d):
    with open(os.path.join(d, "generate_ref.json")) as fh:
        gen_ref = json.load(fh)
    m32 = load(d, torch.float32)
    m16 = load(d, torch.float16)
    cases, summary = [], []
    for case in gen_ref["cases"]:
        n_new = case["max_new_tokens"]
        out = dict(
            prompt_ids=case["prompt_ids"],
            max_new_tokens=n_new,
            output_ids_f16=[],
            margins_f16=[],
            step_err_f16=[],
        )
        for prompt, row32 in zip(case["prompt_ids"], case["output_ids"]):
            row, step_logits = greedy_f16(m16, prompt, n_new)
            margins, errs, f32_flips = [], [], []
            for k, lg in enumerate(step_logits):
                # generate hands back the step logits widened to f32 (or as f16): either
                # way they hold f16 values, since the model computes them in f16.
                lg = lg.float()
                assert torch.equal(lg, lg.half().float()), "step logits are not f16 values"
                t = len(prompt) + k
                assert int(lg.argmax()) == row[t], f"step {k}: token is not the f16 argmax"
                top = torch.topk(lg, 2).values
                margins.append((top[0] - top[1]).item())
                l32 = f32_next_logits(m32, row[:t])
                errs.append((lg - l32).abs().max().item())
                if int(l32.argmax()) != row[t]:
                    f32_flips.append(k)
            out["output_ids_f16"].append(row)
            out["margins_f16"].append(margins)
            out["step_err_f16"].append(errs)
            first_diff = next(
                (k for k in range(n_new) if row[len(prompt) + k] != row32[len(prompt) + k]),
                None,
            )
            summary.append(
                dict(
                    prompt_len=len(prompt),
                    n_new=n_new,
                    equal_f32=row == row32,
                    first_diff_step=first_diff,
                    min_margin=min(margins),
                    max_step_err=max(errs),
                    f32_argmax_differs_at=f32_flips,
                )
            )
        cases.append(out)
    ref = dict(
        versions(),
        cases=cases,
        f16_max_abs_err=max(e for c in cases for r in c["step_err_f16"] for e in r),
    )
    return ref, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(REPO, "tests", "data"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    for name in LOGIT_FIXTURES:
        d = os.path.join(args.data, name)
        if not os.path.exists(os.path.join(d, "input_ids.safetensors")):
            print(f"== {name}: no input_ids.safetensors, skipped")
            continue
        ref, info = measure_logits(d)
        dump(ref, os.path.join(d, "f16_ref.json"))
        print(
            f"== {name} {info['shape']}: f16 max err {ref['f16_max_abs_err']:.4g} "
            f"(mean {ref['f16_mean_abs_err']:.3g}), max|logits| {ref['logits_max_abs']:.4g}, "
            f"f32 vs stored {ref['f32_vs_stored_max_abs']:.3g}, "
            f"weights not exact in f16 {info['inexact_weights']}"
        )

    d = os.path.join(args.data, GEN_FIXTURE)
    ref, summary = measure_gen(d)
    dump(ref, os.path.join(d, "f16_ref.json"))
    print(f"== {GEN_FIXTURE}: f16 max step err {ref['f16_max_abs_err']:.4g}")
    for s in summary:
        what = "equal to f32" if s["equal_f32"] else f"differs from f32 at step {s['first_diff_step']}"
        print(
            f"  prompt {s['prompt_len']:2d} + {s['n_new']}: {what}; min margin "
            f"{s['min_margin']:.4g}, max step err {s['max_step_err']:.4g}, "
            f"f32 argmax of the f16 prefix differs at steps {s['f32_argmax_differs_at']}"
        )
    print(f"  {sum(s['equal_f32'] for s in summary)}/{len(summary)} prompts equal to f32")


if __name__ == "__main__":
    main()
