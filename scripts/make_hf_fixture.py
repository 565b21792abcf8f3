#!/usr/bin/env python3
"""Generate tiny, real Hugging Face GPT-2 test fixtures for wgpipe.

What it makes (under tests/data/, relative to the repo root):

  tiny-gpt2/            vocab 97, n_positions 32, n_embd 36, n_layer 2, n_head 3,
                        n_inner None (=4*n_embd), layer_norm_epsilon 1e-5
  tiny-gpt2-n-inner/    vocab 61, n_positions 16, n_embd 20, n_layer 3, n_head 4,
                        n_inner 50, layer_norm_epsilon 1e-6
  tiny-gpt2-4l/         as tiny-gpt2 with n_layer 4 and a [4, 9] input: room for
                        interleaved 1F1B on two devices in the training tests
  tiny-gpt2-gen/        generation: a tiny byte-level BPE tokenizer and a random
                        model, with greedy-decoding references from model.generate
                        (vocab 320, n_positions 48, n_embd 32, n_layer 4, n_head 4)

tiny-gpt2-gen/ holds:

  tokenizer.json, tokenizer_config.json
      a GPT-2 style byte-level BPE (ByteLevel pre-tokenizer, regex on, no prefix space;
      ByteLevel decoder; no special tokens added on encode) trained with the `tokenizers`
      library on GEN_TRAIN_TEXT (below) to 320 tokens: ids 0..255 are the 256 byte
      symbols, 256..318 the 63 merges in merge order, 319 = <|endoftext|> (eos, like
      GPT-2's last id). Wrapped as GPT2TokenizerFast(vocab, merges,
      clean_up_tokenization_spaces=False) and written by its save_pretrained.
  config.json, model.safetensors, generation_config.json
      GPT2LMHeadModel.save_pretrained(dir, safe_serialization=True), float32: vocab 320,
      n_positions 48, n_embd 32, n_layer 4, n_head 4, bos/eos 319, seed 2477, transformers'
      initializer with initializer_range 0.3 (the default 0.02 makes greedy decoding
      repeat one token); no bias/LayerNorm noise, no --weight-scale.
  generate_ref.json
      greedy generation references from model.generate (do_sample=False, use_cache=True,
      eager attention, each prompt alone: batch 1, no padding):
      {"eos_token_id": 319,
       "cases": [{"prompts": [text...], "prompt_ids": [[id...]...], "max_new_tokens": N,
                  "output_ids": [[id...]...], "texts": [text...]}, ...],
       "eos_case": {...}, "step_logits": {...}}
      cases: the generation config has eos_token_id None, so nothing stops early and no
        logits processor runs: every row is prompt_ids + exactly N argmax tokens (checked
        against full no-cache forwards; each beats the runner-up by >= 0.0109, so f32
        rounding elsewhere does not flip one). texts[i] = tokenizer.decode(output_ids[i]).
        Case 0: four prompts of 2, 5, 9 and 13 tokens ("The", "The pip", "The pipeline",
        "Hello, naïve"), N = 10. Case 1: one prompt of 20 tokens ("The pipeline bubble
        is the idle"), N = 20 (positions up to 39 of 48). Prompts are prefixes of
        GEN_PROMPT_SOURCES with the wanted token counts. The random model emits lone
        bytes of multi-byte characters and control bytes, so the texts hold U+FFFD and
        control characters: what streaming decode must cope with.
      eos_case: {"prompt_ids", "eos_token_id": X, "max_new_tokens": N, "output_ids"}:
        case 0's second prompt ("The pip", N = 10) regenerated with eos_token_id =
        pad_token_id = X, where X is its greedy token at the first generated position
        p >= 2 whose token did not occur before p (here X = 179, p = 2). transformers
        stops right after emitting X, so output_ids is prompt + p + 1 tokens (8), fewer
        than prompt + N; wgpipe's CLI fills the rest of such a row with X (the pad id),
        as transformers does for a row that finishes early in a batch.
      step_logits: {"prompt_ids", "generated_ids", "logits"}: for case 0's first prompt,
        logits[k] (vocab f32 values) are the next-token logits after the prompt and its
        first k greedy tokens (k = 0..3), from a full forward of the whole sequence (no
        cache): a reference for KV-cache decode steps.

Each of the first three directories holds:

  config.json, model.safetensors (+ generation_config.json if transformers writes it)
      exactly as written by GPT2LMHeadModel.save_pretrained(dir, safe_serialization=True)
      in float32. lm_head.weight is tied to wte and is not stored.
  input_ids.safetensors   one int64 tensor `input_ids`, shape [batch, seq]
  logits.safetensors      one f32 tensor `logits`, shape [batch, seq, vocab]:
                          model(input_ids).logits in float32, eval mode, no_grad
  logits_f64.safetensors  one f64 tensor `logits`: the same model upcast with
                          model.double() (same weights, exactly representable), so
                          tests can see how far transformers' own f32 result is
                          from (near-)exact.
  loss_grads.safetensors  the training reference, from the f64 model with
                          input_ids as both input and labels (labels shifted inside:
                          the mean next-token cross-entropy over B x (T-1) predictions):
                          `loss`, f64, shape [1]; and the gradient of that loss for
                          every parameter, f32 (computed in f64, then rounded), under
                          the tensor names of model.safetensors. The LM head is tied
                          to wte, so `transformer.wte.weight` holds both shares.
  train_ref.json          reference training runs: the f64 model (model.double(), eager
                          attention, eval mode, so no dropout) trained for `steps` = 3
                          optimizer steps on input_ids with labels = input_ids (the loss
                          of loss_grads.safetensors, from the f64 logits). Top level:
                          {"steps": 3, "runs": [...]}; each run is
                            {"optimizer": "adamw", "lr", "betas", "eps", "weight_decay",
                             "grad_clip", "losses", "final_loss", "param_checksums"} or
                            {"optimizer": "sgd", "lr", "momentum", "weight_decay",
                             "grad_clip", "losses", "final_loss", "param_checksums"}.
                          Runs, in order: adamw lr 1e-3 betas (0.9, 0.999) eps 1e-8 with
                          weight_decay 0.1; the same with weight_decay 0.0; the same as
                          the first with grad_clip 1.0; sgd lr 0.1 momentum 0.9
                          weight_decay 0.01; sgd lr 0.1 momentum 0 weight_decay 0; the
                          same as the first sgd run with grad_clip 1.0.
                          losses[k] is the loss of the forward before step k's update
                          (losses[0] = the initial model's loss); final_loss is the loss
                          after the last update. param_checksums maps every tensor name
                          of model.safetensors to {"sum", "sum_sq"}: the sum and the sum
                          of squares of that tensor after the last update, in f64.
                          Semantics (torch.optim, foreach=False):
                          - two parameter groups as in nanoGPT: weight_decay applies to
                            the parameters with p.dim() >= 2 (wte, wpe, every c_attn /
                            c_proj / c_fc weight), 0 to biases and LayerNorm weights;
                          - the LM head is tied to wte: one parameter, one gradient
                            holding both shares, one optimizer state;
                          - adamw = torch.optim.AdamW: p -= lr*wd*p (decoupled), then
                            m = b1*m + (1-b1)*g, v = b2*v + (1-b2)*g^2,
                            p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps), t from 1;
                          - sgd = torch.optim.SGD (dampening 0, no nesterov):
                            g += wd*p (L2), buf = g at the first step and
                            buf = momentum*buf + g after, p -= lr*buf;
                          - grad_clip c = torch.nn.utils.clip_grad_norm_(
                            model.parameters(), c) before the step: the L2 norm n over
                            all gradients (wte once), then every gradient is scaled by
                            min(1, c/(n + 1e-6)). null means no clipping.

Weights: transformers' own initializer (normal std 0.02 etc.), fixed seed; then every
LayerNorm weight/bias and every bias parameter gets N(0, 0.1) noise added so those
are non-trivial. Dropout is 0 and the model is in eval mode. Attention uses the
"eager" implementation (plain softmax(QK^T/sqrt(d) + causal mask) V).

How to run (CPU is enough; needs torch, transformers, safetensors, numpy):

  python3 -m venv /work/pyenv
  /work/pyenv/bin/pip install torch transformers safetensors numpy
  /work/pyenv/bin/python scripts/make_hf_fixture.py            # writes tests/data/...
  /work/pyenv/bin/python scripts/make_hf_fixture.py --out DIR  # writes DIR/...
  /work/pyenv/bin/python scripts/make_hf_fixture.py --loss-grads-only
      # (re)writes only each fixture's loss_grads.safetensors, from the model.safetensors
      # and input_ids.safetensors already there; the other files stay byte-identical.
  /work/pyenv/bin/python scripts/make_hf_fixture.py --train-only
      # (re)writes only each fixture's train_ref.json, likewise from the files there.
  /work/pyenv/bin/python scripts/make_hf_fixture.py --gen-only
      # (re)writes only tiny-gpt2-gen/ (also: --only tiny-gpt2-gen); needs `tokenizers`.
  (--weight-scale S multiplies every non-LayerNorm weight by S; default 10, which
  the committed fixtures use.)

Note: with the initializer as is (std 0.02) attention is close to uniform and
max|logits| is ~0.3, so at a 1e-5 relative tolerance the fixture does not tell
gelu_new (tanh) from exact gelu (rel. diff 2e-6 and 3e-7); --weight-scale 10
makes that 3e-4, and the attention far from uniform; hence the default 10.

Generated with torch 2.15.0, transformers 5.24.0, safetensors 0.8.0, numpy 2.4.6,
tokenizers 0.23.3.
Other versions should give the same weights only if torch's RNG and transformers'
initializer are unchanged; re-running may change the bytes of the fixtures.
"""

import argparse
import copy
import json
import os
import re
import shutil

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FIXTURES = [
    dict(
        name="tiny-gpt2",
        seed=1234,
        config=dict(
            vocab_size=97,
            n_positions=32,
            n_embd=36,
            n_layer=2,
            n_head=3,
            n_inner=None,
            layer_norm_epsilon=1e-5,
        ),
        input_shape=(2, 11),
    ),
    dict(
        name="tiny-gpt2-n-inner",
        seed=5678,
        config=dict(
            vocab_size=61,
            n_positions=16,
            n_embd=20,
            n_layer=3,
            n_head=4,
            n_inner=50,
            layer_norm_epsilon=1e-6,
        ),
        input_shape=(1, 16),
    ),
    # Four layers and four sequences: enough for interleaved 1F1B on two
    # devices (2 x 2 chunks of one layer) with M = 2 or 4 microbatches.
    dict(
        name="tiny-gpt2-4l",
        seed=4321,
        config=dict(
            vocab_size=97,
            n_positions=32,
            n_embd=36,
            n_layer=4,
            n_head=3,
            n_inner=None,
            layer_norm_epsilon=1e-5,
        ),
        input_shape=(4, 9),
    ),
]


def build(spec, weight_scale=1.0):
    torch.manual_seed(spec["seed"])
    config = GPT2Config(
        **spec["config"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config).to(torch.float32).eval()

    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_ln = ".ln_" in name or name.startswith("transformer.ln_f")
            if is_ln or name.endswith(".bias"):
                p.add_(torch.randn(p.shape, generator=gen, dtype=torch.float32) * 0.1)
            elif weight_scale != 1.0:
                # Optional: larger matmul/embedding weights make attention less uniform
                # and the logits larger, so the fixture tells more bugs apart.
                p.mul_(weight_scale)
    return model


def loss_grads(model, input_ids):
    """(loss, {name: grad}) of GPT2LMHeadModel(input_ids, labels=input_ids), in f64.

    transformers' ForCausalLMLoss casts the logits to float32 (`logits.float()`),
    which for a float64 model rounds them; so the loss is computed here from the f64
    logits with that function's own steps (labels padded with -100 and shifted by
    one, cross_entropy with mean reduction over the non-ignored positions), and
    checked against transformers' labels= loss at f32 precision.
    """
    model64 = copy.deepcopy(model).double()
    model64.zero_grad(set_to_none=True)
    logits = model64(input_ids).logits
    assert logits.dtype == torch.float64
    labels = torch.nn.functional.pad(input_ids, (0, 1), value=-100)[..., 1:]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )
    loss.backward()
    with torch.no_grad():
        hf_loss = model64(input_ids, labels=input_ids).loss
    rel = abs(hf_loss.item() - loss.item()) / abs(loss.item())
    assert rel < 1e-6, f"f64 loss {loss.item()} vs transformers' labels= loss {hf_loss.item()}"
    # named_parameters lists the tied lm_head.weight once, as transformer.wte.weight,
    # with both the embedding's and the head's share of the gradient.
    grads = {name: p.grad for name, p in model64.named_parameters()}
    return loss.detach(), grads


def write_loss_grads(model, input_ids, out):
    loss, grads = loss_grads(model, input_ids)
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        names = set(f.keys())
    missing = names - set(grads)
    assert not missing, f"no gradient for {sorted(missing)}"
    tensors = {"loss": loss.reshape(1).contiguous()}
    for name in sorted(names):
        tensors[name] = grads[name].to(torch.float32).contiguous()
    save_file(tensors, os.path.join(out, "loss_grads.safetensors"))
    print(f"  loss (f64) = {loss.item():.12g}")


def make_loss_grads_only(spec, out_root):
    out = os.path.join(out_root, spec["name"])
    model = GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager").eval()
    with safe_open(os.path.join(out, "input_ids.safetensors"), "pt") as f:
        input_ids = f.get_tensor("input_ids")
    print(f"== {out} (loss_grads.safetensors only)")
    write_loss_grads(model, input_ids, out)


TRAIN_STEPS = 3

ADAMW = dict(optimizer="adamw", lr=1e-3, betas=[0.9, 0.999], eps=1e-8)
SGD = dict(optimizer="sgd", lr=0.1)
TRAIN_RUNS = [
    dict(ADAMW, weight_decay=0.1, grad_clip=None),
    dict(ADAMW, weight_decay=0.0, grad_clip=None),
    dict(ADAMW, weight_decay=0.1, grad_clip=1.0),
    dict(SGD, momentum=0.9, weight_decay=0.01, grad_clip=None),
    dict(SGD, momentum=0.0, weight_decay=0.0, grad_clip=None),
    # AdamW is nearly invariant to a scalar on the gradient, so the clipped AdamW run
    # differs from the unclipped one only in the 6th digit; SGD shows clipping plainly.
    dict(SGD, momentum=0.9, weight_decay=0.01, grad_clip=1.0),
]


def causal_lm_loss(model64, input_ids):
    """The mean next-token cross-entropy from the f64 logits (as loss_grads does)."""
    logits = model64(input_ids).logits
    assert logits.dtype == torch.float64
    labels = torch.nn.functional.pad(input_ids, (0, 1), value=-100)[..., 1:]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def make_optimizer(model64, run):
    """nanoGPT's two groups: weight decay for the parameters of rank >= 2 only."""
    params = list(model64.parameters())  # the tied wte / lm_head weight once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        dict(params=decay, weight_decay=run["weight_decay"]),
        dict(params=no_decay, weight_decay=0.0),
    ]
    if run["optimizer"] == "adamw":
        return torch.optim.AdamW(
            groups, lr=run["lr"], betas=tuple(run["betas"]), eps=run["eps"], foreach=False
        )
    if run["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=run["lr"], momentum=run["momentum"], foreach=False)
    raise ValueError(run["optimizer"])


def train_run(model, input_ids, run, names):
    """Train a float64 copy of `model` for TRAIN_STEPS steps; the run's record."""
    model64 = copy.deepcopy(model).double().eval()
    opt = make_optimizer(model64, run)
    losses, grad_norms = [], []
    for _ in range(TRAIN_STEPS):
        opt.zero_grad(set_to_none=True)
        loss = causal_lm_loss(model64, input_ids)
        loss.backward()
        losses.append(loss.item())
        if run["grad_clip"] is not None:
            norm = torch.nn.utils.clip_grad_norm_(
                model64.parameters(), run["grad_clip"], foreach=False
            )
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in model64.parameters()])
            )
        grad_norms.append(norm.item())
        opt.step()
    with torch.no_grad():
        final_loss = causal_lm_loss(model64, input_ids).item()
    state = dict(model64.named_parameters())
    missing = set(names) - set(state)
    assert not missing, f"no parameter for {sorted(missing)}"
    checksums = {}
    for name in sorted(names):
        w = state[name].detach()
        assert w.dtype == torch.float64
        checksums[name] = dict(sum=w.sum().item(), sum_sq=(w * w).sum().item())
    record = dict(run, losses=losses, final_loss=final_loss, param_checksums=checksums)
    return record, grad_norms


def make_train_only(spec, out_root):
    out = os.path.join(out_root, spec["name"])
    model = GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager").eval()
    with safe_open(os.path.join(out, "input_ids.safetensors"), "pt") as f:
        input_ids = f.get_tensor("input_ids")
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        names = list(f.keys())
    print(f"== {out} (train_ref.json only)")
    runs = []
    for run in TRAIN_RUNS:
        record, grad_norms = train_run(model, input_ids, run, names)
        desc = ", ".join(f"{k} {v}" for k, v in run.items())
        print(f"  {desc}")
        print(f"    losses {record['losses']} -> {record['final_loss']}")
        print(f"    grad norms before clipping {grad_norms}")
        runs.append(record)
    with open(os.path.join(out, "train_ref.json"), "w") as fh:
        json.dump(dict(steps=TRAIN_STEPS, runs=runs), fh, indent=1)
        fh.write("\n")


def make(spec, out_root, weight_scale=1.0):
    out = os.path.join(out_root, spec["name"])
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)

    model = build(spec, weight_scale)
    model.save_pretrained(out, safe_serialization=True)

    gen = torch.Generator().manual_seed(spec["seed"] + 2)
    input_ids = torch.randint(
        0, spec["config"]["vocab_size"], spec["input_shape"], generator=gen, dtype=torch.int64
    )
    save_file({"input_ids": input_ids.contiguous()}, os.path.join(out, "input_ids.safetensors"))

    with torch.no_grad():
        logits = model(input_ids).logits
    assert logits.dtype == torch.float32
    save_file({"logits": logits.contiguous()}, os.path.join(out, "logits.safetensors"))

    model64 = copy.deepcopy(model).double()
    with torch.no_grad():
        logits64 = model64(input_ids).logits
    assert logits64.dtype == torch.float64
    save_file({"logits": logits64.contiguous()}, os.path.join(out, "logits_f64.safetensors"))

    write_loss_grads(model, input_ids, out)

    # Sanity: reload from disk and check the logits are reproduced bit-for-bit.
    reloaded = GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        logits_re = reloaded(input_ids).logits
    assert torch.equal(logits_re, logits), "reloaded model gives different logits"

    # Report.
    print(f"== {out}")
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        meta = f.metadata()
        print(f"  model.safetensors metadata: {meta}")
        for k in sorted(f.keys()):
            t = f.get_tensor(k)
            print(f"  {k:40s} {str(t.dtype):15s} {list(t.shape)}")
    rel = (logits.double() - logits64).abs().max() / logits64.abs().max()
    print(f"  max|logits| = {logits64.abs().max().item():.6g}")
    print(f"  max|f32 - f64| / max|logits| = {rel.item():.3e}")
    for fn in sorted(os.listdir(out)):
        print(f"  {fn:28s} {os.path.getsize(os.path.join(out, fn))} bytes")
    with open(os.path.join(out, "config.json")) as fh:
        print("  config.json:", json.dumps(json.load(fh), sort_keys=True))


# The generation fixture (--gen-only): a tokenizer trained here and a random model.

GEN_NAME = "tiny-gpt2-gen"
GEN_SEED = 2477  # of seeds 2468..2479, one with no near-ties in greedy runs (check_greedy)
GEN_VOCAB = 320  # 256 byte symbols + 63 merges + <|endoftext|>
EOS_TOKEN = "<|endoftext|>"
GEN_CONFIG = dict(
    n_positions=48,
    n_embd=32,
    n_layer=4,
    n_head=4,
    n_inner=None,
    layer_norm_epsilon=1e-5,
    # The default 0.02 gives near-uniform logits, and greedy decoding repeats one
    # token; 0.3 makes the generated tokens vary (13 distinct of case 1's 20).
    initializer_range=0.3,
)

# Fixed English text the tokenizer is trained on (kept here so the fixture does not
# depend on any file outside this script).
GEN_TRAIN_TEXT = """\
Pipeline parallelism splits the layers of a model across devices. The first device
runs the first layers, then hands its activations to the next device, and so on
until the last device produces the logits. With one batch, only one device works at
a time and the others wait: that idle time is the pipeline bubble. Splitting the
batch into microbatches lets the devices work on different microbatches at once.
For P stages and M microbatches the bubble takes (P - 1) / (M + P - 1) of the time,
so more microbatches make a smaller bubble, at the cost of smaller matrix products.
During training, the backward pass runs the stages in reverse order; schedules such
as GPipe and one forward one backward (1F1B) decide when each stage runs each
microbatch, and how many activations it must keep in memory.
Generation is different: a model writes one token at a time, and every new token
needs a forward pass through all the layers. The keys and values of the earlier
tokens are kept in a cache, so each step only computes the new position. When the
model is split across devices, the devices take turns on every token, and several
independent sequences can keep them all busy, like microbatches in training.
A tokenizer turns text into token ids and back. A byte-level tokenizer can encode
any text, because every byte has its own token, and merges of frequent pairs make
common words short. Decoding joins the bytes of the tokens and reads them as UTF-8;
a token can end in the middle of a character, so a stream of decoded text must wait
for the rest of the character before it prints it.
"""

GEN_CASE0_LENGTHS = (2, 5, 9, 13)
GEN_CASE0_NEW = 10
GEN_CASE1_LENGTH = 20
GEN_CASE1_NEW = 20
GEN_STEP_LOGITS = 3

# Prompts are the shortest word prefixes of these sentences with the wanted token
# counts; some have non-ASCII characters, so decoding and streaming see multi-byte
# UTF-8 that the tokenizer never merged.
GEN_PROMPT_SOURCES = [
    "The pipeline bubble is the idle time of the devices.",
    "Hello, naïve café ☕ — the devices take turns on every token.",
    "Microbatches keep every stage busy while the first device waits for the last one",
    "When the model is split across devices, the keys and values of the earlier "
    "tokens are kept in a cache on the device that holds their layer.",
]


def train_gen_tokenizer():
    """A GPT-2 style byte-level BPE: bytes 0..255, merges, then <|endoftext|> last."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=GEN_VOCAB,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([GEN_TRAIN_TEXT], trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    # The trainer puts the special token first; renumber as GPT-2 does (eos last).
    ordered = sorted((i, t) for t, i in model["vocab"].items() if t != EOS_TOKEN)
    vocab = {t: k for k, (_, t) in enumerate(ordered)}
    vocab[EOS_TOKEN] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    hf = GPT2TokenizerFast(vocab=vocab, merges=merges, clean_up_tokenization_spaces=False)
    assert len(hf) == GEN_VOCAB, f"tokenizer has {len(hf)} tokens, expected {GEN_VOCAB}"
    assert hf.eos_token_id == GEN_VOCAB - 1
    return hf


def prompt_of_length(tokenizer, n, used):
    """A prefix of a GEN_PROMPT_SOURCES sentence that encodes to n tokens: the first
    whole-word one if any, else the first that ends inside a word."""
    for source in GEN_PROMPT_SOURCES:
        words = source.split(" ")
        for k in range(1, len(words) + 1):
            text = " ".join(words[:k])
            if text not in used and len(tokenizer.encode(text)) == n:
                used.add(text)
                return text
    for source in GEN_PROMPT_SOURCES:
        for k in range(1, len(source) + 1):
            text = source[:k]
            if not text[-1].isspace() and text not in used and len(tokenizer.encode(text)) == n:
                used.add(text)
                return text
    raise ValueError(f"no prompt of {n} tokens in GEN_PROMPT_SOURCES")


def greedy(model, prompt_ids, n_new, eos_token_id=None, pad_token_id=None):
    """model.generate for one prompt (batch 1, no padding): the output row as a list."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        do_sample=False,
        use_cache=True,
        max_new_tokens=n_new,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=None,
    )
    ids = torch.tensor([prompt_ids], dtype=torch.int64)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
    return out[0].tolist()


def full_logits(model, ids):
    """Next-token logits after `ids`, from one forward of the whole sequence (no cache)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.int64), use_cache=False).logits
    assert logits.dtype == torch.float32
    return logits[0, -1]


def check_greedy(model, row, n_prompt):
    """Every generated token is the argmax of a full forward over the row before it, by
    a clear margin (so f32 rounding elsewhere cannot flip it); the smallest margin."""
    margin = float("inf")
    for t in range(n_prompt, len(row)):
        logits = full_logits(model, row[:t])
        top2 = torch.topk(logits, 2).values
        margin = min(margin, (top2[0] - top2[1]).item())
        assert top2[0] - top2[1] > 1e-3, f"near-tie at position {t}: {top2.tolist()}"
        assert int(logits.argmax()) == row[t], f"position {t}: generate differs from argmax"
    return margin


def make_gen(out_root):
    out = os.path.join(out_root, GEN_NAME)
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)

    tokenizer = train_gen_tokenizer()
    tokenizer.save_pretrained(out)
    eos = tokenizer.eos_token_id

    torch.manual_seed(GEN_SEED)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        bos_token_id=eos,
        eos_token_id=eos,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **GEN_CONFIG,
    )
    config._attn_implementation = "eager"
    model = GPT2LMHeadModel(config).to(torch.float32).eval()
    model.save_pretrained(out, safe_serialization=True)
    model = GPT2LMHeadModel.from_pretrained(out, attn_implementation="eager").eval()

    used, margins = set(), []
    specs = [(GEN_CASE0_LENGTHS, GEN_CASE0_NEW), ((GEN_CASE1_LENGTH,), GEN_CASE1_NEW)]
    cases = []
    for lengths, n_new in specs:
        case = dict(prompts=[], prompt_ids=[], max_new_tokens=n_new, output_ids=[], texts=[])
        for n in lengths:
            assert n + n_new <= GEN_CONFIG["n_positions"]
            text = prompt_of_length(tokenizer, n, used)
            ids = tokenizer.encode(text)
            row = greedy(model, ids, n_new, pad_token_id=eos)
            assert row[:n] == ids and len(row) == n + n_new, f"{text!r}: row {row}"
            margins.append(check_greedy(model, row, n))
            case["prompts"].append(text)
            case["prompt_ids"].append(ids)
            case["output_ids"].append(row)
            case["texts"].append(tokenizer.decode(row))
        cases.append(case)

    # eos_case: case 0's second prompt, stopped by a token first generated at position >= 2.
    case0 = cases[0]
    ids, row = case0["prompt_ids"][1], case0["output_ids"][1]
    generated = row[len(ids) :]
    pos = next(p for p in range(2, len(generated)) if generated[p] not in generated[:p])
    x = generated[pos]
    stopped = greedy(model, ids, case0["max_new_tokens"], eos_token_id=x, pad_token_id=x)
    assert stopped == row[: len(ids) + pos + 1], f"eos run {stopped} vs greedy {row}"
    eos_case = dict(
        prompt_ids=ids, eos_token_id=x, max_new_tokens=case0["max_new_tokens"], output_ids=stopped
    )

    # step_logits: case 0's first prompt and its first few greedy tokens, full forwards.
    ids, row = case0["prompt_ids"][0], case0["output_ids"][0]
    step_logits = dict(
        prompt_ids=ids,
        generated_ids=row[len(ids) : len(ids) + GEN_STEP_LOGITS],
        logits=[
            full_logits(model, row[: len(ids) + k]).tolist() for k in range(GEN_STEP_LOGITS + 1)
        ],
    )

    ref = dict(eos_token_id=eos, cases=cases, eos_case=eos_case, step_logits=step_logits)
    text = json.dumps(ref, indent=1, ensure_ascii=False)
    # One line per list of numbers (a row of ids, a logits vector), not one per number.
    text = re.sub(
        r"\[\s*(-?[0-9][0-9.eE+-]*(?:,\s*-?[0-9][0-9.eE+-]*)*)\s*\]",
        lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]",
        text,
    )
    assert json.loads(text) == ref
    with open(os.path.join(out, "generate_ref.json"), "w") as fh:
        fh.write(text + "\n")

    print(f"== {out}")
    print(f"  vocab {len(tokenizer)}, eos {eos}")
    for case in cases:
        for text, row in zip(case["prompts"], case["output_ids"]):
            n = len(row) - case["max_new_tokens"]
            print(f"  {n:2d} + {case['max_new_tokens']} tokens: {text!r}")
            print(f"    -> {row[n:]}")
    print(f"  smallest top-1 minus top-2 logit margin of a generated token: {min(margins):.4g}")
    print(f"  eos_case: X = {x} at generated position {pos}, row of {len(stopped)} tokens")
    for fn in sorted(os.listdir(out)):
        print(f"  {fn:28s} {os.path.getsize(os.path.join(out, fn))} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "tests", "data"))
    ap.add_argument(
        "--weight-scale",
        type=float,
        default=10.0,
        help="multiply all non-LayerNorm weights (wte, wpe, c_attn, c_proj, c_fc) by this; "
        "default 10, as the committed fixtures were made (1 = the initializer as is)",
    )
    ap.add_argument(
        "--loss-grads-only",
        action="store_true",
        help="write only loss_grads.safetensors into the existing fixture directories "
        "(the logits files differ in their last bits between machines; this keeps them)",
    )
    ap.add_argument(
        "--train-only",
        action="store_true",
        help="write only train_ref.json (reference losses of short f64 training runs) "
        "into the existing fixture directories",
    )
    ap.add_argument(
        "--only",
        metavar="NAME",
        help="make only the fixture of this name (e.g. tiny-gpt2-4l)",
    )
    ap.add_argument(
        "--gen-only",
        action="store_true",
        help=f"make only the generation fixture {GEN_NAME} (tokenizer, model, generate_ref.json)",
    )
    args = ap.parse_args()
    import tokenizers
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}"
    )
    if args.gen_only or args.only == GEN_NAME:
        make_gen(args.out)
        return
    for spec in FIXTURES:
        if args.only and spec["name"] != args.only:
            continue
        if args.train_only:
            make_train_only(spec, args.out)
        elif args.loss_grads_only:
            make_loss_grads_only(spec, args.out)
        else:
            make(spec, args.out, args.weight_scale)
    if not (args.only or args.train_only or args.loss_grads_only):
        make_gen(args.out)


if __name__ == "__main__":
    main()
