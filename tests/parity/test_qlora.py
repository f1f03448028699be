"""QLoRA: ftlaunch's 4-bit base model with a LoRA adapter against transformers + bitsandbytes + PEFT.

A tiny Llama (2 layers, hidden 64, GQA) is saved by transformers, loaded 4-bit by transformers
(BitsAndBytesConfig, CPU) and by ftl_model_probe --four_bit (quantise on load), a PEFT adapter with
non-zero B on every linear is applied to both, and one padded batch runs forward and backward:
  logits       max |ours - hf| <= 1e-5 at real tokens      (fp32 compute, uint8 storage)
  loss         relative difference <= 1e-6
  adapter grads  ||ours - hf|| / ||hf|| <= 1e-4 for every lora_A / lora_B
for NF4 and FP4, with and without nested quantisation. With bfloat16 quant storage (the seed's
flags: the model and its other weights in bfloat16) the logits agree within 2e-2 (bf16 rounding
of the unquantised weights and activations, which the two sides order differently).
"""
import os
import subprocess
import tempfile

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from harness import check, finish

PROBE = os.environ["FTL_MODEL_PROBE"]
LOGITS_ATOL = 1e-5
LOSS_RTOL = 1e-6
GRAD_RTOL = 1e-4


def make_model(folder):
    config = transformers.AutoConfig.for_model(
        "llama", vocab_size=211, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6)
    torch.manual_seed(3)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)


def make_adapter(folder, adapter_dir):
    base = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 lora_dropout=0.0, task_type="CAUSAL_LM"))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.1)
    peft_model.save_pretrained(adapter_dir)


def batch():
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(0, 211, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def hf_run(folder, adapter_dir, quant_type, nested, storage, dtype):
    bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                                          bnb_4bit_use_double_quant=nested, bnb_4bit_compute_dtype=torch.float32,
                                          bnb_4bit_quant_storage=storage)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb, dtype=dtype,
                                                              device_map="cpu")
    model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
    out = model(**batch())
    out.loss.backward()
    grads = {name.replace(".default", ""): p.grad.float() for name, p in model.named_parameters() if "lora_" in name}
    return out.logits.detach().float(), out.loss.item(), grads


def probe_run(folder, adapter_dir, work, quant_type, nested, storage, dtype):
    inp, out = os.path.join(work, "in.safetensors"), os.path.join(work, "out.safetensors")
    save_file(batch(), inp)
    args = [PROBE, folder, inp, out, "--dtype", dtype, "--adapter", adapter_dir, "--four_bit", quant_type,
            "--nested", "1" if nested else "0", "--storage", storage, "--compute", "float32"]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed: {proc.stderr}")
    return load_file(out)


def main():
    with tempfile.TemporaryDirectory() as work:
        folder, adapter_dir = os.path.join(work, "model"), os.path.join(work, "adapter")
        make_model(folder)
        make_adapter(folder, adapter_dir)
        valid = batch()["attention_mask"].bool()
        for quant_type in ("nf4", "fp4"):
            for nested in (False, True):
                label = f"{quant_type} nested={int(nested)} uint8 storage, fp32"
                logits, loss, grads = hf_run(folder, adapter_dir, quant_type, nested, torch.uint8, torch.float32)
                ours = probe_run(folder, adapter_dir, work, quant_type, nested, "uint8", "float32")
                diff = (ours["logits"] - logits)[valid].abs().max().item()
                check(diff <= LOGITS_ATOL, f"{label}: logits max abs diff {diff:.2e} <= {LOGITS_ATOL}")
                lrel = abs(ours["loss"].item() - loss) / abs(loss)
                check(lrel <= LOSS_RTOL, f"{label}: loss {ours['loss'].item():.6f} vs {loss:.6f}, rel {lrel:.2e}")
                worst, worst_name, missing = 0.0, "", []
                for name, g in grads.items():
                    mine = ours.get("grad." + name)
                    if mine is None:
                        missing.append(name)
                        continue
                    r = ((mine - g).norm() / g.norm().clamp_min(1e-30)).item()
                    if r > worst:
                        worst, worst_name = r, name
                check(not missing and len(grads) == 28, f"{label}: gradients for all {len(grads)} adapter tensors {missing[:3]}")
                check(worst <= GRAD_RTOL, f"{label}: worst adapter gradient rel diff {worst:.2e} ({worst_name})")
        logits, loss, _ = hf_run(folder, adapter_dir, "nf4", True, torch.bfloat16, torch.bfloat16)
        ours = probe_run(folder, adapter_dir, work, "nf4", True, "bfloat16", "bfloat16")
        diff = (ours["logits"] - logits)[valid].abs().max().item()
        check(diff <= 2e-2, f"nf4 nested bfloat16 storage (the seed's flags), bf16 model: logits max abs diff {diff:.2e} <= 2e-2")
    finish("QLoRA forward and adapter gradients match transformers + bitsandbytes + PEFT")


if __name__ == "__main__":
    main()
