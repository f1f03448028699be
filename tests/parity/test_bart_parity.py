"""BART (encoder-decoder) parity with transformers' BartForConditionalGeneration, CPU fp32.

Two tiny random BARTs made here (init_std 0.6 so rows generate differently; every LayerNorm and
final_logits_bias randomised so each is seen):
  A  gelu, no embedding scale, 4 heads, 2+2 layers, tied embeddings
  B  relu, scale_embedding (x sqrt(d_model)), 2 heads, 1 encoder + 3 decoder layers
A batch of 3 rows with right-padded sources (attention_mask 0 on padding) and labels with -100
tails; the decoder reads shift_tokens_right(labels). Checks, against the model in eval mode:
  logits   max |ours - HF| / max |HF| <= 1e-5
  loss     relative difference <= 1e-5 (mean cross-entropy over counted labels)
  grads    every trained weight's gradient: |ours - HF| / |HF| (norms) <= 1e-4
  generate generate(max_new_tokens=8) with num_beams 1 (greedy) and 4 (beam search) equals
           transformers' token for token
           (A with eos_token_id [2, 38], so a row finishes early and is padded; B with
           forced_bos_token_id 0: the forced-BOS step; both with forced_eos_token_id at the end);
           B again with no_repeat_ngram_size 2 and min_length 6 (bart-large turns on the first)
  LoRA     PEFT LoRA on A (q_proj, v_proj): adapters on the same linears, created bit for bit as
           PEFT creates them, logits 1e-5, adapter gradients 1e-4
  bad      a folder whose config.json says model_type t5 -> exit 1 naming model_type and bart
"""
import json
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402

PROBE = os.environ["FTL_SEQ2SEQ_PROBE"]
VOCAB = 61


def make_model(folder, forced_bos=None, eos=None, **config):
    torch.manual_seed(3)
    cfg = transformers.BartConfig(vocab_size=VOCAB, d_model=16, max_position_embeddings=32, encoder_ffn_dim=24,
                                  decoder_ffn_dim=24, dropout=0.1, attention_dropout=0.1, activation_dropout=0.1,
                                  init_std=0.6, **config)
    model = transformers.BartForConditionalGeneration(cfg)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
        model.final_logits_bias.normal_(0, 0.3)
    model.generation_config.forced_bos_token_id = forced_bos
    if eos is not None:
        model.generation_config.eos_token_id = eos
    model.save_pretrained(folder)
    return model.eval()


def batch():
    g = torch.Generator().manual_seed(5)
    input_ids = torch.randint(3, VOCAB, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 3:] = 0
    input_ids[mask == 0] = 1  # pad
    labels = torch.randint(3, VOCAB, (3, 5), generator=g)
    labels[0, 4:] = -100
    labels[2, 2:] = -100
    return input_ids, mask, labels


def rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def compare(name, work, forced_bos=None, eos=None, processors=False, **config):
    folder = os.path.join(work, name)
    model = make_model(folder, forced_bos, eos, **config)
    input_ids, mask, labels = batch()
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    inputs, result = os.path.join(work, f"{name}_in.safetensors"), os.path.join(work, f"{name}_out.safetensors")
    save_file({"input_ids": input_ids, "attention_mask": mask, "labels": labels}, inputs)
    proc = subprocess.run([PROBE, folder, inputs, result], capture_output=True, text=True)
    if not check(proc.returncode == 0, f"{name}: the probe runs ({proc.stderr.strip()[-300:]})"):
        return
    ours = load_file(result)
    diff = ((ours["logits"] - out.logits).abs().max() / out.logits.abs().max()).item()
    check(diff <= 1e-5, f"{name}: logits max rel diff {diff:.2e} <= 1e-5")
    loss_diff = abs(ours["loss"].item() - out.loss.item()) / abs(out.loss.item())
    check(loss_diff <= 1e-5, f"{name}: loss {ours['loss'].item():.6f} vs {out.loss.item():.6f}, rel diff {loss_diff:.2e}")
    worst, worst_name, missing = 0.0, "", []
    for pname, p in model.named_parameters():
        key = "grad." + pname
        if key not in ours:
            missing.append(pname)
            continue
        d = rel(ours[key], p.grad)
        if d > worst:
            worst, worst_name = d, pname
    check(not missing, f"{name}: a gradient for every HF parameter (missing: {missing[:3]})")
    check(worst <= 1e-4, f"{name}: worst gradient rel diff {worst:.2e} ({worst_name}) <= 1e-4")

    compare_generation(name, folder, model, inputs, input_ids, mask, "")
    if processors:  # the processors bart-large's generation_config.json turns on, and min_length
        model.generation_config.no_repeat_ngram_size = 2
        model.generation_config.min_length = 6
        model.generation_config.save_pretrained(folder)
        compare_generation(name, folder, model, inputs, input_ids, mask, " with no_repeat_ngram_size 2, min_length 6")


def compare_generation(name, folder, model, inputs, input_ids, mask, setting):
    work = os.path.dirname(folder)
    for beams in (1, 4):
        with torch.no_grad():
            reference = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=8, num_beams=beams,
                                       do_sample=False)
        generated = os.path.join(work, f"{name}_generated_{beams}.safetensors")
        proc = subprocess.run([PROBE, folder, inputs, generated, "--generate", "8", str(beams)], capture_output=True,
                              text=True)
        what = ("greedy generation" if beams == 1 else f"beam search ({beams} beams)") + setting
        if check(proc.returncode == 0, f"{name}: the probe runs {what} ({proc.stderr.strip()[-300:]})"):
            sequences = load_file(generated)["sequences"]
            check(sequences.shape == reference.shape and torch.equal(sequences, reference),
                  f"{name}: {what} equals transformers' token for token\n  ours {sequences.tolist()}\n"
                  f"  HF   {reference.tolist()}")


def compare_lora(name, work):
    """PEFT LoRA (r 4, alpha 8, q_proj and v_proj: PEFT's BART default) on model `name`, created
    after torch.manual_seed(11); ours from a CPU generator seeded 11. B starts at zero in both, so
    the logits are the base model's and only B gets a gradient, through x -> A -> B * scaling."""
    import peft
    folder = os.path.join(work, name)
    model = transformers.BartForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    torch.manual_seed(11)
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="SEQ_2_SEQ_LM",
                                                        target_modules=["q_proj", "v_proj"]))
    input_ids, mask, labels = batch()
    out = model(input_ids=input_ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    inputs, result = os.path.join(work, f"{name}_lora_in.safetensors"), os.path.join(work, f"{name}_lora_out.safetensors")
    save_file({"input_ids": input_ids, "attention_mask": mask, "labels": labels}, inputs)
    proc = subprocess.run([PROBE, folder, inputs, result, "--lora", "4", "8", "11", "q_proj,v_proj"],
                          capture_output=True, text=True)
    if not check(proc.returncode == 0, f"{name} + LoRA: the probe runs ({proc.stderr.strip()[-300:]})"):
        return
    ours = load_file(result)
    lora = {n.replace(".default", ""): p for n, p in model.named_parameters() if "lora_" in n}
    created = [k[len("init."):] for k in ours if k.startswith("init.")]
    check(sorted(created) == sorted(lora), f"{name} + LoRA: adapters on the same {len(lora) // 2} linears as PEFT")
    same_init = all(torch.equal(ours["init." + n], p.detach()) for n, p in lora.items() if "init." + n in ours)
    check(same_init, f"{name} + LoRA: every adapter is created as PEFT creates it, bit for bit (PEFT's order and RNG)")
    diff = ((ours["logits"] - out.logits).abs().max() / out.logits.abs().max()).item()
    check(diff <= 1e-5, f"{name} + LoRA: logits max rel diff {diff:.2e} <= 1e-5")
    worst = max(rel(ours["grad." + n], p.grad) if p.grad.norm() > 0 else ours["grad." + n].norm().item()
                for n, p in lora.items())
    check(worst <= 1e-4, f"{name} + LoRA: worst adapter gradient rel diff {worst:.2e} <= 1e-4")


def main():
    with tempfile.TemporaryDirectory() as work:
        compare("A", work, eos=[2, 38], encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4)
        compare_lora("A", work)
        compare("B", work, forced_bos=0, processors=True, encoder_layers=1, decoder_layers=3, encoder_attention_heads=2, decoder_attention_heads=2,
                activation_function="relu", scale_embedding=True)
        t5 = os.path.join(work, "t5")
        os.makedirs(t5)
        with open(os.path.join(work, "A", "config.json")) as f:
            config = json.load(f)
        config["model_type"] = "t5"
        with open(os.path.join(t5, "config.json"), "w") as f:
            json.dump(config, f)
        proc = subprocess.run([PROBE, t5, "unused", "unused"], capture_output=True, text=True)
        check(proc.returncode == 1 and "model_type" in proc.stderr and "must be bart" in proc.stderr,
              f"model_type t5: a clear error ({proc.stderr.strip()})")
    finish("BART matches transformers")


if __name__ == "__main__":
    main()
