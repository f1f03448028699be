"""DoRA (--use_dora True, PEFT's use_dora) against transformers + PEFT, CPU.

  fp32      20 LoRA steps of the SFT parity case (all-linear, r 4, cosine schedule, clipping, weight
            decay) with DoRA: every loss within 1e-4 (relative) of PEFT's, the saved adapter's
            tensors (lora_A, lora_B, lora_magnitude_vector) within 1e-4 of the reference's after
            training, PeftModel.from_pretrained on the output gives ftlaunch's logits (1e-5)
  bf16      --bf16 --torch_dtype bfloat16 (a bf16 base, autocast, fp32 adapters and magnitudes)
            against PEFT under autocast(bfloat16): the curve within 5e-2 as test_sft_parity's
            bf16 case (both stacks round in bf16, and differently after a few steps)
  merge     `ftlaunch merge` of the DoRA adapter equals PEFT's merge_and_unload (1e-6 relative)
  dropout   lora_dropout 0.1 with and without --gradient_checkpointing: the same curve, exactly
  ZeRO-3    2 CPU ranks, every tensor partitioned (batch 2 each) against 1 rank x batch 4: 1e-5
  QDoRA     4-bit NF4 nested base (uint8 storage, fp32 compute) against PEFT on bitsandbytes'
            CPU path: the magnitudes start from the dequantised weights; 1e-4 as test_qlora; and under
            ZeRO-3 on 2 ranks (bf16 storage, layers quantised as they are partitioned) vs stage 0 on 2
            ranks, as test_qlora compares QLoRA (no clipping): 1e-5
  8-bit     LLM.int8 base (--use_8bit_quantization) against PEFT on bitsandbytes' CPU path in train
            mode, magnitudes from the dequantised int8 weights (PEFT's dequantize_bnb_weight): 1e-4
  refused   --use_dora without --use_peft_lora
"""
import os
import subprocess
import sys
import tempfile

import torch
import transformers
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402
import test_zero  # noqa: E402

DORA = {"use_dora": True}


def saved_name(state_dict_key):
    """PEFT's state-dict key -> the name in adapter_model.safetensors."""
    name = state_dict_key.replace(".default", "")
    return name[:-len(".weight")] if name.endswith("lora_magnitude_vector.weight") else name


def keep_int8_scales_across_steps():
    """The reference's 8-bit DoRA on a CPU crashes on its second forward (bitsandbytes 0.50, PEFT
    0.21.2): DoRA's forward replaces the Int8Params through .to(), whose copy carries the codes as
    CB but no SCB, so the next Linear8bitLt.forward re-runs init_8bit_state and overwrites the
    layer's scales with None (MatMul8bitFp then fails on state.SCB). Keeping the scales the state
    already holds changes no number: they are the same scales the weights were quantised with."""
    import bitsandbytes as bnb
    init = bnb.nn.Linear8bitLt.init_8bit_state

    def init_keeping_scales(self):
        scales = self.state.SCB
        init(self)
        if self.state.SCB is None:
            self.state.SCB = scales

    bnb.nn.Linear8bitLt.init_8bit_state = init_keeping_scales


def main():
    import peft
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, texts = sft.make_inputs(work)
        out = os.path.join(work, "dora")
        ours, _ = sft.run_ftlaunch(model_dir, data_dir, out, 2, 2, extra=("--use_dora", "True"))
        ref, ref_model = sft.reference_losses(model_dir, texts, 2, 2, lora_kwargs=DORA)
        print(f"     losses ftlaunch {ours[0]:.5f} -> {ours[-1]:.5f}; transformers+peft {ref[0]:.5f} -> {ref[-1]:.5f}")
        sft.compare_curves(ours, ref, 1e-4, "DoRA, 20 steps against transformers+peft")
        plain, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "plain"), 2, 2)
        check(max(abs(a - b) for a, b in zip(plain, ours)) > 1e-4, "DoRA's curve differs from plain LoRA's")

        ours_w = load_file(os.path.join(out, "adapter_model.safetensors"))
        ref_w = {saved_name(k): v for k, v in ref_model.state_dict().items() if "lora_" in k}
        magnitudes = [k for k in ours_w if k.endswith("lora_magnitude_vector")]
        worst = max(((ours_w[k] - ref_w[k]).norm() / ref_w[k].norm().clamp_min(1e-12)).item() for k in ours_w)
        check(set(ours_w) == set(ref_w) and len(magnitudes) == 14 and worst <= 1e-4,
              f"adapter tensors ({len(ours_w)}, {len(magnitudes)} magnitude vectors) vs the reference's after 20 "
              f"steps: worst rel diff {worst:.2e} <= 1e-4")

        base = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        loaded = peft.PeftModel.from_pretrained(base, out)
        check(loaded.peft_config["default"].use_dora, "adapter_config.json says use_dora, PEFT reads it")
        ids = torch.tensor([[5, 17, 42, 99, 7, 3, 250, 11]])
        inp, res = os.path.join(work, "in.safetensors"), os.path.join(work, "res.safetensors")
        save_file({"input_ids": ids}, inp)
        subprocess.run([sft.PROBE, model_dir, inp, res, "--adapter", out], check=True)
        with torch.no_grad():
            peft_logits = loaded(input_ids=ids).logits
        diff = (load_file(res)["logits"] - peft_logits).abs().max().item()
        check(diff <= 1e-5, f"PeftModel.from_pretrained(DoRA output) logits vs ftlaunch's, max abs diff {diff:.2e}")

        merged_dir = os.path.join(work, "merged")
        proc = subprocess.run([sft.FTLAUNCH, "merge", "--model_name_or_path", model_dir, "--adapter_path", out,
                               "--output_dir", merged_dir], capture_output=True, text=True)
        check(proc.returncode == 0, f"ftlaunch merge of a DoRA adapter runs ({proc.stderr.strip()[-300:]})")
        reference = loaded.merge_and_unload().state_dict()
        mine = load_file(os.path.join(merged_dir, "model.safetensors"))
        worst = max(((mine[k] - reference[k]).norm() / reference[k].norm()).item() for k in mine)
        check(set(mine) <= set(reference) and worst <= 1e-6,
              f"merged weights vs PEFT's merge_and_unload: worst rel diff {worst:.2e} <= 1e-6")

        bf16, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "dora_bf16"), 2, 2,
                                   extra=("--use_dora", "True", "--bf16", "True", "--torch_dtype", "bfloat16"))
        ref_bf16, _ = sft.reference_losses(model_dir, texts, 2, 2, bf16=True, lora_kwargs=DORA)
        sft.compare_curves(bf16, ref_bf16, 5e-2, "DoRA --bf16 --torch_dtype bfloat16 against transformers+peft in bf16")

        # With dropout the base output is recomputed from the dropped input; recomputing the layers
        # in backward (--gradient_checkpointing) replays the same draws: the same curve, exactly.
        dropout = ("--use_dora", "True", "--lora_dropout", "0.1")
        dropped, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "dora_dropout"), 2, 2, extra=dropout)
        recomputed, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "dora_dropout_gc"), 2, 2,
                                         extra=dropout + ("--gradient_checkpointing", "True"))
        check(recomputed == dropped and dropped != ours,
              "DoRA with lora_dropout 0.1: --gradient_checkpointing True gives the same curve, step for step (exact)")

        one, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "dora_b4"), 4, 1, extra=("--use_dora", "True"))
        zero3, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "dora_zero3"), 2, 1,
                                    extra=("--use_dora", "True"),
                                    launcher=("--config_file", test_zero.zero3_everything_partitioned(work, 2)))
        sft.compare_curves(zero3, one, 1e-5, "DoRA under ZeRO-3 on 2 ranks x batch 2 vs 1 rank x batch 4")

        import test_qlora
        qdora, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "qdora"), 4, 1,
                                    extra=("--use_dora", "True", *test_qlora.FOUR_BIT,
                                           "--bnb_4bit_quant_storage_dtype", "uint8"))
        bnb = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                              bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
        ref_q, _ = sft.reference_losses(model_dir, texts, 4, 1, lora_kwargs=DORA,
                                        load_kwargs={"quantization_config": bnb, "device_map": "cpu"})
        sft.compare_curves(qdora, ref_q, 1e-4, "QDoRA (NF4, nested) against transformers + bitsandbytes + PEFT")
        check(max(abs(a - b) / abs(b) for a, b in zip(qdora, one)) > 1e-4, "QDoRA's curve differs from 16-bit DoRA's")
        keep_int8_scales_across_steps()
        dora_8bit, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "dora_8bit"), 4, 1,
                                        extra=("--use_dora", "True", "--use_8bit_quantization", "True"))
        ref_8bit, _ = sft.reference_losses(model_dir, texts, 4, 1, lora_kwargs=DORA, train_mode=True, load_kwargs={
            "quantization_config": transformers.BitsAndBytesConfig(load_in_8bit=True), "device_map": "cpu"})
        sft.compare_curves(dora_8bit, ref_8bit, 1e-4, "DoRA on LLM.int8 base weights against transformers + bitsandbytes "
                                                      "+ PEFT (magnitudes from the dequantised int8 weights)")
        check(max(abs(a - b) / abs(b) for a, b in zip(dora_8bit, one)) > 1e-4, "8-bit DoRA's curve differs from 16-bit DoRA's")
        # bf16 storage, as the seed's QLoRA command, compared as test_qlora compares plain QLoRA:
        # 2 ranks under ZeRO-3 vs DeepSpeed stage 0, without clipping, learning rate 1e-2.
        bf16_storage = ("--use_dora", "True", *test_qlora.FOUR_BIT, "--bnb_4bit_quant_storage_dtype", "bfloat16",
                        "--max_grad_norm", "0", "--learning_rate", "1e-2")
        qdora_bf16, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "qdora_bf16"), 2, 1, extra=bf16_storage,
                                         launcher=("--config_file", test_zero.zero_config(work, 0, 2, 1)))
        qdora_zero3, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "qdora_zero3"), 2, 1, extra=bf16_storage,
                                          launcher=("--config_file", test_zero.zero3_everything_partitioned(work, 2)))
        sft.compare_curves(qdora_zero3, qdora_bf16, 1e-5, "QDoRA under ZeRO-3 on 2 ranks (bf16 storage, each layer "
                                                          "quantised as it is partitioned) vs stage 0")

        for flags, fragment in ((("--use_peft_lora", "False"), "needs --use_peft_lora True"),):
            cmd = sft.ftlaunch_command(model_dir, data_dir, os.path.join(work, "refused"), 2, 1,
                                       extra=("--use_dora", "True", *flags))
            proc = subprocess.run(cmd, capture_output=True, text=True)
            check(proc.returncode == 2 and fragment in proc.stderr + proc.stdout,
                  f"--use_dora with {' '.join(flags)}: exit {proc.returncode}, the message says {fragment!r}")
    finish("all DoRA checks passed")


if __name__ == "__main__":
    main()
