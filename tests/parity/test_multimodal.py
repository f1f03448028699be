"""Gemma 3's image-and-text checkpoints (model_type gemma3, Gemma3ForConditionalGeneration) trained on
text, against transformers 5 + PEFT 0.21, on CPU.

Setup: test_sft_parity's tokenizer and texts; a Gemma3ForConditionalGeneration whose language model
has 2 layers of hidden 64 and whose SigLIP vision tower 2 layers of hidden 32 (vision_use_head false,
as Gemma 3's towers have it), norms randomised. Its layers attend fully: with a window (8 or 16) this
tiny run is chaotic, transformers' own eager and SDPA attention ending 8.4e-4 apart after 20 steps
(ftlaunch 3.4e-4 from SDPA), as test_sft_parity found for olmo3; gemma3's windows are
test_model_parity's (gemma3_text).

Checks:
  logits     ftl_model_probe's logits and loss on the hub's layout (language_model.model.*) and on
             transformers 5's own (save_original_format=False: model.language_model.*) equal
             transformers' (logits 1e-5, loss 1e-6)
  curve      LoRA all-linear, 20 steps: per-step loss vs transformers + PEFT 1e-4 (test_sft_parity's bound)
  adapter    adapter_model.safetensors holds PEFT's tensors under PEFT's names, the vision tower's
             included (PEFT adapts its linears first; they never run, so they keep their draws: bit
             for bit), the trained ones within 1e-4; PeftModel.from_pretrained(output_dir)
             logits equal ftlaunch's with that adapter (1e-5); `ftlaunch merge` maps PEFT's names
             (model.language_model.*, model.vision_tower.*) to the hub's, and transformers' logits on
             the merged model equal PeftModel's (1e-5)
  train.py   the seed's target list adapts the vision tower's q/k/v_proj as PEFT does (the same names)
  QLoRA      NF4 nested, fp32 compute: per-step loss vs transformers + bitsandbytes + PEFT 1e-4
  full       full fine-tuning writes the language model under the hub's names and the vision tower
             and projector as they were; transformers loads it; logits equal ftlaunch's (1e-5)
"""
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, failures  # noqa: E402
import test_sft_parity as sft  # noqa: E402
from test_model_parity import run_probe_args  # noqa: E402

LLAMA_TARGETS = "q_proj,k_proj,v_proj,o_proj,down_proj,up_proj,gate_proj"


def make_gemma3(work, tokenizer_dir):
    path = os.path.join(work, "gemma3")
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.save_pretrained(path)
    text = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                layer_types=["full_attention", "full_attention"], bos_token_id=1, eos_token_id=2, pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2, image_size=28,
                  patch_size=14, vision_use_head=False)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(path)
    return path, model


def batch(vocab):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(3, vocab, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    labels = ids.clone()
    labels[mask == 0] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def check_logits(work, folder, model):
    inputs = batch(model.config.text_config.vocab_size)
    with torch.no_grad():
        reference = model(**inputs)
    valid = inputs["attention_mask"].bool()
    stacked = os.path.join(work, "gemma3_transformers_layout")
    model.save_pretrained(stacked, save_original_format=False)
    shutil.copy(os.path.join(folder, "tokenizer.json"), stacked)
    for layout, path in (("the hub's layout", folder), ("transformers 5's layout", stacked)):
        ours = run_probe_args(path, inputs, work, [])
        diff = (ours["logits"] - reference.logits)[valid].abs().max().item()
        loss = abs(ours["loss"].item() - reference.loss.item()) / reference.loss.item()
        check(diff <= 1e-5 and loss <= 1e-6,
              f"gemma3 on {layout}: logits max abs diff {diff:.2e} <= 1e-5, loss rel diff {loss:.2e} <= 1e-6")


def check_lora(work, folder, data_dir, texts):
    import peft
    out = os.path.join(work, "gemma3_lora")
    ours, _ = sft.run_ftlaunch(folder, data_dir, out, 2, 2)
    ref, ref_model = sft.reference_losses(folder, texts, 2, 2)
    sft.compare_curves(ours, ref, 1e-4, "gemma3 LoRA all-linear: 20 steps against transformers+peft")
    saved = load_file(os.path.join(out, "adapter_model.safetensors"))
    reference = {k.replace(".default", ""): v for k, v in ref_model.state_dict().items() if "lora_" in k}
    vision = [k for k in reference if ".vision_tower." in k]
    same = set(saved) == set(reference)
    drawn = same and all(torch.equal(saved[k], reference[k].float()) for k in vision)
    worst = max((saved[k] - reference[k].float()).abs().max().item() for k in reference) if same else float("inf")
    check(same and len(vision) == 24 and drawn and worst <= 1e-4,
          f"the adapter holds PEFT's {len(reference)} tensors under its names, the vision tower's {len(vision)} as PEFT "
          f"drew them (bit for bit: {drawn}), the trained ones within {worst:.2e} <= 1e-4 (test_moe's bound)")
    inputs = batch(ref_model.config.text_config.vocab_size)
    inputs.pop("labels")
    ours_logits = run_probe_args(folder, inputs, work, ["--adapter", out])["logits"]
    loaded = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(folder), out)
    with torch.no_grad():
        theirs = loaded(**inputs).logits
    valid = inputs["attention_mask"].bool()
    diff = (ours_logits - theirs)[valid].abs().max().item()
    check(diff <= 1e-5, f"PeftModel.from_pretrained(output_dir) logits equal ftlaunch's with its adapter, max abs diff {diff:.2e}")
    merged = os.path.join(work, "gemma3_merged")
    proc = subprocess.run([sft.FTLAUNCH, "merge", "--model_name_or_path", folder, "--adapter_path", out, "--output_dir", merged],
                          capture_output=True, text=True, timeout=300)
    if check(proc.returncode == 0, f"ftlaunch merge of the gemma3 adapter exits 0 ({(proc.stdout + proc.stderr).strip()[-300:]})"):
        with torch.no_grad():
            merged_logits = transformers.AutoModelForCausalLM.from_pretrained(merged)(**inputs).logits
        names_kept = set(load_file(os.path.join(merged, "model.safetensors"))) == set(
            load_file(os.path.join(folder, "model.safetensors")))
        diff = (merged_logits - theirs)[valid].abs().max().item()
        check(names_kept and diff <= 1e-5 and "merged 26 LoRA weights" in proc.stdout,
              f"the merged model keeps the hub's names ({names_kept}), merges the 26 linears (14 of the language model, 12 of "
              f"the vision tower), and transformers' logits on it equal PeftModel's, max abs diff {diff:.2e} <= 1e-5")

    listed = os.path.join(work, "gemma3_train_py_list")
    sft.run_ftlaunch(folder, data_dir, listed, 2, 1, extra=("--lora_target_modules", LLAMA_TARGETS, "--max_steps", "1"))
    wrapped = peft.get_peft_model(transformers.AutoModelForCausalLM.from_pretrained(folder),
                                  peft.LoraConfig(r=4, target_modules=LLAMA_TARGETS.split(",")))
    peft_keys = {k.replace(".default", "") for k in wrapped.state_dict() if "lora_" in k}
    ours_keys = set(load_file(os.path.join(listed, "adapter_model.safetensors")))
    check(ours_keys == peft_keys, f"train.py's list adapts what PEFT adapts ({len(peft_keys)} tensors, the vision tower's "
                                  f"q/k/v_proj among them: {sum('.vision_tower.' in k for k in peft_keys)})")


def check_qlora(work, folder, data_dir, texts):
    import bnb_portable  # noqa: F401  (bitsandbytes' portable 4-bit kernels, the same on every CPU)
    four_bit = ("--use_4bit_quantization", "True", "--use_nested_quant", "True", "--bnb_4bit_quant_type", "nf4",
                "--bnb_4bit_compute_dtype", "float32", "--bnb_4bit_quant_storage_dtype", "uint8")
    ours, _ = sft.run_ftlaunch(folder, data_dir, os.path.join(work, "gemma3_4bit"), 2, 2, extra=four_bit)
    bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
    ref, _ = sft.reference_losses(folder, texts, 2, 2, load_kwargs={"quantization_config": bnb, "device_map": "cpu"})
    sft.compare_curves(ours, ref, 1e-4, "gemma3 QLoRA (the language model 4-bit; bitsandbytes quantises the tower too, "
                                        "which never runs): 20 steps against transformers+bitsandbytes+peft")


def check_full(work, folder, data_dir, base):
    out = os.path.join(work, "gemma3_full")
    sft.run_ftlaunch(folder, data_dir, out, 2, 1, extra=("--use_peft_lora", "False", "--learning_rate", "1e-3",
                                                         "--max_steps", "3"))
    written = load_file(os.path.join(out, "model.safetensors"))
    source = load_file(os.path.join(folder, "model.safetensors"))
    same_names = set(written) == set(source)
    untouched = same_names and all(torch.equal(written[k], source[k]) for k in source if not k.startswith("language_model."))
    trained = transformers.AutoModelForCausalLM.from_pretrained(out)
    inputs = batch(base.config.text_config.vocab_size)
    inputs.pop("labels")
    ours = run_probe_args(out, inputs, work, [])["logits"]
    with torch.no_grad():
        theirs = trained(**inputs).logits
    valid = inputs["attention_mask"].bool()
    diff = (ours - theirs)[valid].abs().max().item()
    moved = (written["language_model.model.layers.0.mlp.down_proj.weight"]
             - source["language_model.model.layers.0.mlp.down_proj.weight"]).abs().max().item()
    check(same_names and untouched and diff <= 1e-5 and moved > 0,
          f"gemma3 full fine-tuning writes the hub's names ({same_names}), the vision tower and projector as they were "
          f"({untouched}); transformers loads it, logits vs ftlaunch's max abs diff {diff:.2e} <= 1e-5; the language "
          f"model trained (max change {moved:.2e})")


def main():
    with tempfile.TemporaryDirectory() as work:
        llama_dir, data_dir, texts = sft.make_inputs(work)
        folder, model = make_gemma3(work, llama_dir)
        check_logits(work, folder, model)
        check_lora(work, folder, data_dir, texts)
        check_qlora(work, folder, data_dir, texts)
        check_full(work, folder, data_dir, model)
    if failures:
        print(f"{len(failures)} multimodal checks failed")
        sys.exit(1)
    print("all multimodal checks passed")


if __name__ == "__main__":
    main()
