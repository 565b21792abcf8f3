#!/usr/bin/env python3
"""Generate tiny, real Hugging Face GPT-2 test fixtures for wgpipe.

What it makes (under tests/data/, relative to the repo root):

  tiny-gpt2/            vocab 97, n_positions 32, n_embd 36, n_layer 2, n_head 3,
                        n_inner None (=4*n_embd), layer_norm_epsilon 1e-5
  tiny-gpt2-n-inner/    vocab 61, n_positions 16, n_embd 20, n_layer 3, n_head 4,
                        n_inner 50, layer_norm_epsilon 1e-6
  tiny-gpt2-4l/         as tiny-gpt2 with n_layer 4 and a [4, 9] input: room for
                        interleaved 1F1B on two devices in the training tests

Each directory holds:

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
  (--weight-scale S multiplies every non-LayerNorm weight by S; default 10, which
  the committed fixtures use.)

Note: with the initializer as is (std 0.02) attention is close to uniform and
max|logits| is ~0.3, so at a 1e-5 relative tolerance the fixture does not tell
gelu_new (tanh) from exact gelu (rel. diff 2e-6 and 3e-7); --weight-scale 10
makes that 3e-4, and the attention far from uniform; hence the default 10.

Generated with torch 2.15.0, transformers 5.24.0, safetensors 0.8.0, numpy 2.4.6.
Other versions should give the same weights only if torch's RNG and transformers'
initializer are unchanged; re-running may change the bytes of the fixtures.
"""

import argparse
import copy
import json
import os
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
    args = ap.parse_args()
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for spec in FIXTURES:
        if args.only and spec["name"] != args.only:
            continue
        if args.train_only:
            make_train_only(spec, args.out)
        elif args.loss_grads_only:
            make_loss_grads_only(spec, args.out)
        else:
            make(spec, args.out, args.weight_scale)


if __name__ == "__main__":
    main()
