#!/usr/bin/env python3
"""Tiny, real Hugging Face Llama-family test fixtures for wgpipe (issue 21).

Each directory under tests/data/ is what `save_pretrained` wrote for a small
random model, with the references wgpipe's tests compare against:

  tiny-llama/        LlamaForCausalLM, f32 file: vocab 97, hidden 36, 4 layers,
                     6 heads over 2 KV heads (GQA), head_dim 6, intermediate 50
                     (not a multiple of 4), untied head, rope_theta 10000 with
                     llama3 rope_scaling, max_position_embeddings 64.
  tiny-llama-bf16/   the same weights stored as bf16 (rounded once).
  tiny-llama-f16/    the same weights stored as f16.
  tiny-qwen2/        Qwen2ForCausalLM, bf16, SHARDED (model.safetensors.index.json
                     with 3 shards): vocab 101, hidden 32, 2 layers, 4 heads over
                     1 KV head (MQA), head_dim 10 (not hidden/heads, not a power of
                     two), q/k/v biases, tied head, intermediate 46.
  tiny-mistral/      MistralForCausalLM, f16: vocab 89, hidden 24, 2 layers, 4 heads
                     over 2 KV heads, head_dim 6, intermediate 37, sliding_window 5
                     (shorter than the 9-token inputs: the window masks keys), linear
                     rope_scaling factor 2, untied head.
  tiny-llama-gen/    generation: a Llama-3-style byte-level BPE tokenizer (the
                     Llama 3 pre-tokenizer regex, a ByteLevel decoder, a BOS token
                     added by the post-processor) and a random LlamaForCausalLM of
                     vocab 320, with greedy references from model.generate.

Every directory but tiny-llama-gen holds:

  input_ids.safetensors   int64 `input_ids` [4, 9]
  logits.safetensors      f32 `logits` [4, 9, V]: transformers' f32 forward of the
                          model loaded from the stored values (a bf16/f16 file is
                          loaded and widened to f32 exactly: the reference for a
                          file is the f32 computation on exactly what it holds)
  logits_f64.safetensors  the same in float64 (model.double())
  loss_grads.safetensors  `loss` (f64, [1]) of model(input_ids, labels=input_ids) in
                          float64, and the f32 gradient of every parameter under
                          the checkpoint's own names (model.layers.N.self_attn.q_proj
                          .weight, ...; lm_head.weight when untied; with a tied head
                          model.embed_tokens.weight holds both shares)
  train_ref.json          {"steps": 3, "runs": [...]}: the float64 model trained
                          3 steps on input_ids (labels = input_ids) with AdamW
                          (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight_decay 0.1 on
                          the parameters of rank >= 2, foreach=False): "losses" (the
                          loss before each step), "final_loss", "param_checksums"
                          {name: {"sum", "sum_sq"}} after the last step
  fixture.json            what was made and how: the spec, library versions, the
                          largest |logit|, and transformers' own f32 error against
                          its f64 logits

tiny-llama-gen/ holds tokenizer.json, tokenizer_config.json, config.json,
model.safetensors, generation_config.json and generate_ref.json:
  {"bos_token_id", "eos_token_id",
   "cases": [{"prompts": [text...], "prompt_ids": [[...]...] (BOS included, as
     tokenizer(text) gives them), "max_new_tokens": N, "output_ids": [[...]...],
     "texts": [...], "margins": [[...]...] (top-1 minus top-2 logit at each
     generated step: every one is far above f32 rounding)}]}
  Each prompt generated alone (batch 1, no padding), greedy, use_cache=True,
  eager attention, eos disabled (so every row is prompt + N tokens).

How to run (CPU is enough; needs torch, transformers, safetensors, tokenizers):

  pip install torch transformers safetensors
  python3 scripts/make_family_fixtures.py              # writes tests/data/...
  python3 scripts/make_family_fixtures.py --out DIR

Weights: transformers' initializer with initializer_range 0.3 (the default 0.02
leaves attention near uniform and the logits near zero, where a relative
tolerance tells little), then every norm weight gets N(0, 0.1) noise and every
bias N(0, 0.1), so none is trivial. Eager attention, eval mode.
"""

import argparse
import copy
import json
import os
import shutil
import tempfile

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

COMMON = dict(hidden_act="silu", attention_dropout=0.0, initializer_range=0.3)

SPECS = [
    dict(
        name="tiny-llama",
        cls=LlamaForCausalLM,
        cfg=LlamaConfig,
        dtype=torch.float32,
        seed=11,
        config=dict(
            COMMON,
            vocab_size=97,
            hidden_size=36,
            intermediate_size=50,
            num_hidden_layers=4,
            num_attention_heads=6,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
            tie_word_embeddings=False,
        ),
    ),
    dict(name="tiny-llama-bf16", same_as="tiny-llama", dtype=torch.bfloat16),
    dict(name="tiny-llama-f16", same_as="tiny-llama", dtype=torch.float16),
    dict(
        name="tiny-qwen2",
        cls=Qwen2ForCausalLM,
        cfg=Qwen2Config,
        dtype=torch.bfloat16,
        shards=3,
        seed=12,
        config=dict(
            COMMON,
            vocab_size=101,
            hidden_size=32,
            intermediate_size=46,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=10,
            max_position_embeddings=64,
            rms_norm_eps=1e-6,
            rope_theta=1000000.0,
            tie_word_embeddings=True,
            use_sliding_window=False,
        ),
    ),
    dict(
        name="tiny-mistral",
        cls=MistralForCausalLM,
        cfg=MistralConfig,
        dtype=torch.float16,
        seed=13,
        config=dict(
            COMMON,
            vocab_size=89,
            hidden_size=24,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=6,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            rope_scaling=dict(rope_type="linear", factor=2.0),
            sliding_window=5,
            tie_word_embeddings=False,
        ),
    ),
]

BATCH, SEQ = 4, 9


def build(spec):
    torch.manual_seed(spec["seed"])
    config = spec["cfg"](**spec["config"])
    config._attn_implementation = "eager"
    model = spec["cls"](config).to(torch.float32).eval()
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.1)
    return model


def save(model, spec, out):
    """save_pretrained in the spec's dtype (sharded when asked), then reload the
    stored values as an f32 model: the reference computes on exactly those."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    stored = copy.deepcopy(model).to(spec["dtype"])
    kw = {}
    if spec.get("shards"):
        total = sum(p.numel() * p.element_size() for p in stored.parameters())
        kw["max_shard_size"] = total // spec["shards"] + 1
    stored.save_pretrained(out, safe_serialization=True, **kw)
    if spec.get("shards"):
        assert os.path.exists(os.path.join(out, "model.safetensors.index.json")), "not sharded"
    back = type(model).from_pretrained(out, attn_implementation="eager", dtype=torch.float32)
    return back.to(torch.float32).eval()


def checkpoint_names(out):
    """Every tensor name in the checkpoint's file(s)."""
    index = os.path.join(out, "model.safetensors.index.json")
    files = (
        sorted(set(json.load(open(index))["weight_map"].values()))
        if os.path.exists(index)
        else ["model.safetensors"]
    )
    names = []
    for f in files:
        with safe_open(os.path.join(out, f), "pt") as fh:
            names += list(fh.keys())
    return names


def causal_lm_loss(model64, input_ids):
    logits = model64(input_ids).logits
    labels = torch.nn.functional.pad(input_ids, (0, 1), value=-100)[..., 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def loss_grads(model, input_ids, names, out):
    model64 = copy.deepcopy(model).double()
    model64.zero_grad(set_to_none=True)
    loss = causal_lm_loss(model64, input_ids)
    loss.backward()
    with torch.no_grad():
        hf = model64(input_ids, labels=input_ids).loss.item()
    assert abs(hf - loss.item()) <= 1e-6 * abs(loss.item()), (hf, loss.item())
    grads = {n: p.grad for n, p in model64.named_parameters()}
    missing = set(names) - set(grads)
    assert not missing, f"no gradient for {sorted(missing)}"
    tensors = {"loss": loss.detach().reshape(1).contiguous()}
    for n in sorted(names):
        tensors[n] = grads[n].to(torch.float32).contiguous()
    save_file(tensors, os.path.join(out, "loss_grads.safetensors"))
    return loss.item()


def train_ref(model, input_ids, names, out):
    model64 = copy.deepcopy(model).double().eval()
    params = list(model64.parameters())
    groups = [
        dict(params=[p for p in params if p.dim() >= 2], weight_decay=0.1),
        dict(params=[p for p in params if p.dim() < 2], weight_decay=0.0),
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    losses = []
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss = causal_lm_loss(model64, input_ids)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    with torch.no_grad():
        final = causal_lm_loss(model64, input_ids).item()
    state = dict(model64.named_parameters())
    checks = {
        n: dict(sum=state[n].sum().item(), sum_sq=(state[n] * state[n]).sum().item())
        for n in sorted(names)
    }
    run = dict(
        optimizer="adamw",
        lr=1e-3,
        betas=[0.9, 0.999],
        eps=1e-8,
        weight_decay=0.1,
        grad_clip=None,
        losses=losses,
        final_loss=final,
        param_checksums=checks,
    )
    with open(os.path.join(out, "train_ref.json"), "w") as fh:
        json.dump(dict(steps=3, runs=[run]), fh, indent=1)
        fh.write("\n")
    return losses


def make(spec, models, out_root):
    base = spec.get("same_as")
    if base:
        spec = dict(next(s for s in SPECS if s["name"] == base), **spec)
        model = models[base]
    else:
        model = build(spec)
        models[spec["name"]] = model
    out = os.path.join(out_root, spec["name"])
    print(f"== {out}")
    ref = save(model, spec, out)
    gen = torch.Generator().manual_seed(spec["seed"] + 2)
    input_ids = torch.randint(0, spec["config"]["vocab_size"], (BATCH, SEQ), generator=gen)
    save_file({"input_ids": input_ids.contiguous()}, os.path.join(out, "input_ids.safetensors"))
    with torch.no_grad():
        logits = ref(input_ids).logits
        logits64 = copy.deepcopy(ref).double()(input_ids).logits
    save_file({"logits": logits.contiguous()}, os.path.join(out, "logits.safetensors"))
    save_file({"logits": logits64.contiguous()}, os.path.join(out, "logits_f64.safetensors"))
    names = checkpoint_names(out)
    loss = loss_grads(ref, input_ids, names, out)
    losses = train_ref(ref, input_ids, names, out)
    err = ((logits.double() - logits64).abs().max() / logits64.abs().max()).item()
    info = dict(
        name=spec["name"],
        architecture=type(model).__name__,
        stored_dtype=str(spec["dtype"]).replace("torch.", ""),
        sharded=bool(spec.get("shards")),
        config=spec["config"],
        seed=spec["seed"],
        max_abs_logit=logits64.abs().max().item(),
        transformers_f32_rel_error=err,
        loss=loss,
        versions=dict(torch=torch.__version__, transformers=transformers.__version__),
    )
    with open(os.path.join(out, "fixture.json"), "w") as fh:
        json.dump(info, fh, indent=1)
        fh.write("\n")
    print(f"  loss {loss:.6f}, AdamW losses {losses}, f32 rel. error {err:.2e}")


GEN_TEXT = (
    "The pipeline bubble is the idle time of a pipeline. Every device waits for the "
    "one before it. Microbatches fill the pipe; the bubble shrinks as they grow. "
    "Hello, naïve café: naïveté costs 3 € and 7 ¥. "
) * 4

# Llama 3's pre-tokenizer split (tokenizer.json of meta-llama/Llama-3.2-1B).
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def make_tokenizer(out):
    """A Llama-3-style byte-level BPE of 320 tokens: 256 byte symbols, merges,
    then <|begin_of_text|> (BOS, added by the post-processor) and
    <|end_of_text|> (EOS)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=318,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tok.train_from_iterator([GEN_TEXT], trainer)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", bos)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(out)
    return fast


def greedy(model, ids, n):
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens=n,
        do_sample=False,
        use_cache=True,
        eos_token_id=None,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_logits=True,
    )
    margins = []
    for step in out.logits:
        top = torch.topk(step[0].float(), 2).values
        margins.append((top[0] - top[1]).item())
    return out.sequences[0].tolist(), margins


def make_gen(out_root):
    out = os.path.join(out_root, "tiny-llama-gen")
    print(f"== {out}")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    tok = make_tokenizer(out)
    V = len(tok)
    assert V == 320, V
    torch.manual_seed(21)
    config = LlamaConfig(
        **dict(
            COMMON,
            vocab_size=V,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=True,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
        )
    )
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).eval()
    gen = torch.Generator().manual_seed(22)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    model.generation_config.eos_token_id = None
    model.save_pretrained(out, safe_serialization=True)
    model = LlamaForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    cases = []
    for prompts, n in [(["The", "The pipeline", "Hello, naïve café"], 10), (["Every device waits for the one"], 16)]:
        rows, texts, margins, prompt_ids = [], [], [], []
        for p in prompts:
            ids = tok(p)["input_ids"]
            prompt_ids.append(ids)
            seq, m = greedy(model, ids, n)
            rows.append(seq)
            texts.append(tok.decode(seq))
            margins.append(m)
        cases.append(dict(prompts=prompts, prompt_ids=prompt_ids, max_new_tokens=n, output_ids=rows, texts=texts, margins=margins))
        print(f"  {prompts}: min margin {min(min(m) for m in margins):.4f}")
    ref = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, cases=cases)
    with open(os.path.join(out, "generate_ref.json"), "w") as fh:
        json.dump(ref, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "tests", "data"))
    ap.add_argument("--only", default=None)
    a = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    models = {}
    for spec in SPECS:
        if a.only in (None, spec["name"], spec.get("same_as")):
            make(spec, models, a.out)
    if a.only in (None, "tiny-llama-gen"):
        make_gen(a.out)


if __name__ == "__main__":
    main()
