"""ZeRO stages on CPU ranks against the single-rank run, on the tiny model of test_sft_parity.

The LoRA run of test_sft_parity (AdamW with weight decay, cosine schedule, clipping) with the same
global batch of 4 rows, under accelerate DeepSpeed configs for stages 1, 2 and 3 with 2 and 4 CPU
ranks, with and without accumulation. Checks:
  curves       per-step loss == the single-rank, no-ZeRO run within 1e-5 relative, 20 steps
  adapters     the adapters of checkpoint-5 and of the end (difference norm over all adapter
               weights / their norm) == the single-rank ones within 1e-5. (The inputs are fixed:
               with other draws of the tokenizer, hence the model, Adam's normalised updates of
               near-zero gradients amplified fp32 summation-order differences -- a batch split
               over ranks, a norm over shards -- to 1e-4 by step 20, plain data parallel alike.)
  evaluation   eval_loss at steps 10 and 20 on a 7-row split (uneven over 4 ranks: the last round is
               topped up with rows from the start, as accelerate deals it, so every rank joins
               every ZeRO-3 gather) == the first case's with as many ranks within 1e-5 (the Trainer's
               eval_loss depends on the world size: a step's loss is over all ranks' batches)
  ZeRO-3       on 4 ranks every tensor is partitioned (stage3_param_persistence_threshold 0, from a
               DeepSpeed JSON: on this tiny model the default 1e5 keeps everything whole, as the
               2-rank case checks); each rank reports holding its 1/world_size slice of the frozen
               weights (the tensors it keeps between uses, padding included): slice * ranks <=
               total + 4 KiB
  loading      (persistence threshold 0, from a DeepSpeed JSON) on a 32-layer model stored in bf16 (~75 MB as fp32, largest part 2.9 MB), the peak
               growth of each worker's resident memory while loading: plain data parallel >= the
               fp32 model (the control; it also maps the whole file); ZeRO-3 on 4 ranks <= 3/4
               of the fp32 model, so no rank held a whole fp32 copy (measured ~41-55 MB against
               ~36 MB for the slices + their file pages; the rest is not yet accounted for)
  buckets      ZeRO-2 on 2 ranks with accumulation, gradients reduce-scattered in 10 buckets
               (reduce_bucket_size 1000), during the last backward (overlap_comm) and after it: both
               curves == the single-rank one (1e-5) and each other bit for bit
  bf16         LoRA under --bf16 True: without DeepSpeed the frozen linears and the head kept in
               bf16 (norms, embeddings fp32); ZeRO-3 (DeepSpeed's bf16 engine) keeps every frozen
               tensor in bf16 and partitions exactly those bytes, curve == plain 2 ranks with
               --torch_dtype bfloat16 (1e-6)
  qwen3        a qwen3 of the same shape (per-head q/k norms, randomised): LoRA on one rank ==
               transformers + PEFT (1e-4); ZeRO-3 on 4 ranks with every tensor partitioned == one
               rank (1e-5); the same for a gemma3 (q/k norms and four (1 + w) norms a layer), a
               phi3 (its fused qkv_proj and gate_up_proj partitioned and gathered) and an olmo2
               (no input norms; q/k norms over the whole projections)
  persistence  with DeepSpeed's default stage3_param_persistence_threshold (1e5 elements) the
               tensors below it stay whole on every rank: each rank reports exactly their fp32 bytes
  resume       a stage-2 run on 4 ranks saves checkpoint-10; resumed on 2 ranks under stage 1
               (re-partitioned optimizer state) it logs the uninterrupted curve for steps 11..20
  kill         ZeRO-3 on 2 ranks, rank 1 SIGKILLed in the middle of step 11 (after its first
               backward, before the gradients are reduced): the job stops (exit != 0, within 2
               minutes) naming rank 1; checkpoint-4 and -8 are whole; resuming gives the
               uninterrupted curve for steps 9..20 (1e-6)
  bad input    resuming that checkpoint with another model: exit 2, the checkpoint's manifest
               naming it a checkpoint of another run (another base model), before any step
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, failures  # noqa: E402
import test_sft_parity as sft  # noqa: E402



def zero_config(work, stage, ranks, accumulation, deepspeed_lines=()):
    """An accelerate YAML for ZeRO `stage` on `ranks` CPU ranks; deepspeed_lines: more
    deepspeed_config keys ("zero3_save_16bit_model: true")."""
    extra = "".join(f"  {line}\n" for line in deepspeed_lines)
    tag = re.sub(r"[^a-z0-9]+", "_", "_".join(deepspeed_lines))
    path = os.path.join(work, f"zero{stage}_{ranks}x{accumulation}{tag}.yaml")
    with open(path, "w") as f:
        f.write(f"""compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: {stage}
  gradient_accumulation_steps: {accumulation}
  offload_optimizer_device: none
  offload_param_device: none
{extra}mixed_precision: 'no'
num_machines: 1
num_processes: {ranks}
machine_rank: 0
main_process_port: 0
use_cpu: true
""")
    return path


def zero3_everything_partitioned(work, ranks, name=None, zero=None, aio=None):
    """An accelerate YAML for ZeRO-3 on `ranks` CPU ranks from a DeepSpeed JSON with
    stage3_param_persistence_threshold 0: on the tiny test models DeepSpeed's default (1e5
    elements) would keep every tensor whole, and nothing would be gathered. `zero`: more
    zero_optimization keys; `aio`: an aio section; `name`: the files' stem."""
    return deepspeed_json_config(work, ranks, name or f"zero3_json_{ranks}",
                                 {"stage": 3, "stage3_param_persistence_threshold": 0, **(zero or {})}, aio)


def deepspeed_json_config(work, ranks, name, zero, aio=None):
    """An accelerate YAML on `ranks` CPU ranks whose deepspeed_config_file <name>.json has the
    zero_optimization section `zero` (and `aio`), the rest "auto"."""
    ds_json = os.path.join(work, f"{name}.json")
    config = {"zero_optimization": zero,
              "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
              "train_batch_size": "auto", "gradient_clipping": "auto"}
    if aio:
        config["aio"] = aio
    with open(ds_json, "w") as f:
        json.dump(config, f)
    yaml = os.path.join(work, f"{name}.yaml")
    with open(yaml, "w") as f:
        f.write(f"distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: {ds_json}\n"
                f"num_machines: 1\nnum_processes: {ranks}\nmain_process_port: 0\nuse_cpu: true\n")
    return yaml


def worst_curve_diff(a, b, steps=None):
    pairs = list(zip(a, b)) if steps is None else [(a[s], b[s]) for s in steps]
    return max(abs(x - y) / abs(y) for x, y in pairs) if len(a) == len(b) or steps else float("inf")


def adapter_diff(dir_a, dir_b, file="adapter_model.safetensors"):
    """(|a - b| / |b| over all of `file`'s weights together, the worst tensor's own relative diff)."""
    a = load_file(os.path.join(dir_a, file))
    b = load_file(os.path.join(dir_b, file))
    if set(a) != set(b):
        return float("inf"), float("inf")
    total = sum(((a[k] - b[k]) ** 2).sum().item() for k in b) ** 0.5 / sum((b[k] ** 2).sum().item() for k in b) ** 0.5
    return total, max(((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)).item() for k in b)


EVAL = ("--splits", "train,test", "--eval_strategy", "steps", "--eval_steps", "10", "--save_steps", "5")


def eval_losses(out):
    history = json.load(open(os.path.join(out, "trainer_state.json")))["log_history"]
    return [e["eval_loss"] for e in history if "eval_loss" in e]


def loading_growth(log):
    return [int(m) for m in re.findall(r"loading the model raised resident memory by (\d+) bytes", log)]


def check_bf16_frozen_linears(work, model_dir, data_dir):
    """LoRA under --bf16 True. Plain data parallel keeps the frozen linears (and the untied head)
    in bf16, embeddings and norms in fp32 (the log says so). DeepSpeed's bf16 engine casts the
    whole frozen model to bf16: ZeRO-3 on 2 ranks (every tensor partitioned) reports exactly every
    tensor at 2 bytes as the partitioned total, and its curve equals plain data parallel's with
    --torch_dtype bfloat16 (the same types) on 2 ranks (bf16 products depend on the batch's padded
    shape, so 1 rank x batch 4 is ~1e-2 away after 20 steps, for plain data parallel alike).
    Without clipping: plain data parallel takes the norm as torch's clip_grad_norm_ does (fp32
    per-tensor norms), ZeRO over its shards in fp64, and bf16 amplifies that last-bit difference
    in the coefficient to ~3e-5 in 20 steps."""
    bf16 = ("--bf16", "True", "--max_grad_norm", "0")
    two_cpu_ranks = ("--config_file", os.path.join(os.environ["FTL_SOURCE_DIR"], "configs", "multi_cpu_2.yaml"))
    _, log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "bf16_linears"), 2, 1, extra=bf16, launcher=two_cpu_ranks)
    check("frozen base weights kept in Float, the decoder's linears in BFloat16, lm_head in BFloat16" in log,
          "--bf16 True with LoRA, no DeepSpeed: the log says the frozen linears and head are kept in bf16, the rest fp32")
    plain, log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "bf16_plain"), 2, 1,
                                  extra=(*bf16, "--torch_dtype", "bfloat16"), launcher=two_cpu_ranks)
    everything_bf16 = "frozen base weights kept in BFloat16, the decoder's linears in BFloat16, lm_head in BFloat16"
    check(everything_bf16 in log, "--torch_dtype bfloat16: the log says the whole frozen model is kept in bf16")
    losses, log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "bf16_zero3"), 2, 1, extra=bf16,
                                   launcher=("--config_file", zero3_everything_partitioned(work, 2)))
    check(everything_bf16 in log, "ZeRO-3 with --bf16 True (DeepSpeed's bf16 engine): the whole frozen model in bf16")
    weights = load_file(os.path.join(model_dir, "model.safetensors"))
    expected = sum(t.numel() * 2 for t in weights.values())
    totals = {int(t) for t in re.findall(r"holds \d+ bytes of the (\d+) bytes", log)}
    check(totals == {expected}, f"ZeRO-3 bf16: partitioned bytes {sorted(totals)} == every tensor at 2 bytes: {expected} "
                                f"(fp32 would be {sum(t.numel() * 4 for t in weights.values())})")
    curve = worst_curve_diff(losses, plain)
    check(len(losses) == len(plain) and curve <= 1e-6,
          f"ZeRO-3 bf16 vs plain data parallel with --torch_dtype bfloat16, 2 ranks: worst rel diff {curve:.2e} <= 1e-6")


def check_gradient_buckets(work, model_dir, data_dir, single):
    """ZeRO-2 on 2 ranks x batch 1 x accumulation 2, gradients in small buckets (reduce_bucket_size
    1000: a bucket per few adapter tensors) reduced during the last backward (overlap_comm) or
    after it: both equal the 1-rank curve, and each other bit for bit (with 2 ranks every sum is
    one commutative addition, whatever the bucket layout)."""
    curves = {}
    for overlap in (True, False):
        yaml = deepspeed_json_config(work, 2, f"zero2_buckets_{overlap}",
                                     {"stage": 2, "overlap_comm": overlap, "reduce_bucket_size": 1000})
        losses, log = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, f"buckets_{overlap}"), 1, 2,
                                       launcher=("--config_file", yaml))
        buckets = re.search(r"reduce-scattered in (\d+) bucket", log)
        during = "as soon as the step's last backward has finished it (overlap_comm)" in log
        curve = worst_curve_diff(losses, single)
        check(buckets is not None and int(buckets.group(1)) > 5 and during == overlap and curve <= 1e-5,
              f"ZeRO-2, {buckets.group(1) if buckets else '?'} gradient buckets reduced "
              f"{'during' if overlap else 'after'} backward: curve vs 1 rank {curve:.2e} <= 1e-5")
        curves[overlap] = losses
    check(curves[True] == curves[False], "overlapped and after-backward bucket reductions give the same curve bit for bit")


def model_variant(small_model_dir, folder, change, dtype=None):
    """`folder`: the tiny model's folder (its tokenizer) with a fresh random model (seed 0) of the
    config `change(config)` edits (or returns in its place), saved in `dtype` when given. Returns
    the model."""
    import torch
    import transformers
    shutil.copytree(small_model_dir, folder)
    for name in os.listdir(folder):
        if name.endswith(".safetensors") or name == "config.json":
            os.remove(os.path.join(folder, name))
    config = transformers.AutoConfig.from_pretrained(small_model_dir)
    config = change(config) or config
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder)
    return model


def check_loading_memory(work, small_model_dir, data_dir):
    import torch
    big = os.path.join(work, "big_model")

    def bigger(config):
        config.hidden_size, config.intermediate_size, config.num_hidden_layers = 256, 688, 32
        config.num_attention_heads, config.num_key_value_heads = 4, 2

    model = model_variant(small_model_dir, big, bigger, torch.bfloat16)
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    one = ("--max_steps", "1", "--lora_target_modules", "q_proj,v_proj")
    _, log = sft.run_ftlaunch(big, data_dir, os.path.join(work, "big_plain"), 4, 1, extra=one)
    plain = loading_growth(log)
    check(len(plain) == 1 and plain[0] >= fp32_bytes,
          f"loading without ZeRO-3 grows resident memory by {plain} bytes >= the fp32 model ({fp32_bytes})")
    # Everything partitioned (stage3_param_persistence_threshold 0, from a DeepSpeed JSON file).
    yaml = zero3_everything_partitioned(work, 4)
    _, log = sft.run_ftlaunch(big, data_dir, os.path.join(work, "big_zero3"), 1, 1, extra=one, launcher=("--config_file", yaml))
    sharded = loading_growth(log)
    bound = fp32_bytes * 3 // 4
    check(len(sharded) == 4 and max(sharded) <= bound,
          f"ZeRO-3 on 4 ranks: loading grows each rank by {sharded} bytes <= {bound}")
    # DeepSpeed's default threshold (1e5 elements, what an accelerate YAML gets): smaller tensors
    # stay whole on every rank, the rest is partitioned.
    _, log = sft.run_ftlaunch(big, data_dir, os.path.join(work, "big_zero3_persist"), 1, 1, extra=one,
                              launcher=("--config_file", zero_config(work, 3, 4, 1)))
    whole = [int(m) for m in re.findall(r"and (\d+) bytes of tensors under 100000 elements whole", log)]
    expected = 4 * sum(p.numel() for p in model.parameters() if p.numel() < 100000)
    check(len(whole) == 4 and all(w == expected for w in whole),
          f"stage3_param_persistence_threshold 1e5: each rank keeps the {expected} bytes of smaller tensors whole ({whole[:1]})")


def qwen3_of(llama):
    """A qwen3 of the tiny llama's shape: per-head q/k norms."""
    import transformers
    return transformers.Qwen3Config(
        vocab_size=llama.vocab_size, hidden_size=llama.hidden_size, intermediate_size=llama.intermediate_size,
        num_hidden_layers=llama.num_hidden_layers, num_attention_heads=llama.num_attention_heads,
        num_key_value_heads=llama.num_key_value_heads, head_dim=llama.hidden_size // llama.num_attention_heads,
        max_position_embeddings=llama.max_position_embeddings, tie_word_embeddings=llama.tie_word_embeddings,
        bos_token_id=llama.bos_token_id, eos_token_id=llama.eos_token_id, pad_token_id=llama.pad_token_id)


def gemma3_of(llama):
    """A gemma3_text of the tiny llama's shape: q/k norms and four norms a layer, all (1 + w), a
    sliding layer (window 16) and a full one. (A fixed input, as the llama's: with a window of 8
    the draw of its norms took one rank's and 4 ranks' curves 1e-5 apart by step 20, plain data
    parallel alike (7.4e-6): Adam amplifying fp32 summation order.)"""
    import transformers
    return transformers.Gemma3TextConfig(
        vocab_size=llama.vocab_size, hidden_size=llama.hidden_size, intermediate_size=llama.intermediate_size,
        num_hidden_layers=llama.num_hidden_layers, num_attention_heads=llama.num_attention_heads,
        num_key_value_heads=llama.num_key_value_heads, head_dim=llama.hidden_size // llama.num_attention_heads,
        query_pre_attn_scalar=16, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=llama.max_position_embeddings, bos_token_id=llama.bos_token_id,
        eos_token_id=llama.eos_token_id, pad_token_id=llama.pad_token_id)


def phi3_of(llama):
    """A phi3 of the tiny llama's shape: fused qkv_proj and gate_up_proj, half of each head rotated."""
    import transformers
    return transformers.Phi3Config(
        vocab_size=llama.vocab_size, hidden_size=llama.hidden_size, intermediate_size=llama.intermediate_size,
        num_hidden_layers=llama.num_hidden_layers, num_attention_heads=llama.num_attention_heads,
        num_key_value_heads=llama.num_key_value_heads, max_position_embeddings=llama.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        bos_token_id=llama.bos_token_id, eos_token_id=llama.eos_token_id, pad_token_id=llama.pad_token_id)


def olmo2_of(llama):
    """An olmo2 of the tiny llama's shape: no input norms, post norms, q/k norms over whole projections."""
    import transformers
    return transformers.Olmo2Config(
        vocab_size=llama.vocab_size, hidden_size=llama.hidden_size, intermediate_size=llama.intermediate_size,
        num_hidden_layers=llama.num_hidden_layers, num_attention_heads=llama.num_attention_heads,
        num_key_value_heads=llama.num_key_value_heads, max_position_embeddings=llama.max_position_embeddings,
        bos_token_id=llama.bos_token_id, eos_token_id=llama.eos_token_id, pad_token_id=llama.pad_token_id)


def check_norm_family(work, small_model_dir, data_dir, texts, single, name, make_config):
    """A model of the tiny model's shape with tensors of its own (qwen3's q/k norms; gemma3's too, and
    its feed-forward norms; phi3's fused linears), its norms randomised: LoRA on one rank ==
    transformers + PEFT (1e-4, test_sft_parity's bound), and those tensors are partitioned,
    gathered and used like every other: ZeRO-3 on 4 ranks with every tensor partitioned == one rank."""
    import torch

    folder = os.path.join(work, f"{name}_model")
    model = model_variant(small_model_dir, folder, make_config)
    with torch.no_grad():  # norms start at the identity: randomise them so that they matter
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    one, _ = sft.run_ftlaunch(folder, data_dir, os.path.join(work, f"{name}_single"), 4, 1)
    reference, _ = sft.reference_losses(folder, texts, 4, 1)
    worst = worst_curve_diff(one, reference) if len(one) == len(reference) else float("inf")
    check(worst <= 1e-4, f"{name} LoRA, 1 rank: loss curve vs transformers + PEFT worst rel diff {worst:.2e} <= 1e-4")
    sharded, log = sft.run_ftlaunch(folder, data_dir, os.path.join(work, f"{name}_zero3"), 1, 1,
                                    launcher=("--config_file", zero3_everything_partitioned(work, 4)))
    curve = worst_curve_diff(sharded, one) if len(sharded) == len(one) == len(single) else float("inf")
    held = re.findall(r"holds (\d+) bytes of the (\d+) bytes", log)
    check(curve <= 1e-5 and len(held) == 4 and one != single,
          f"{name}, ZeRO-3 on 4 ranks, every tensor partitioned (its own norms and linears too): loss curve vs 1 rank "
          f"worst rel diff {curve:.2e} <= 1e-5 (and not the llama's curve)")


def check_kill_mid_step(work, model_dir, data_dir):
    """ZeRO-3 on 2 ranks, rank 1 killed (SIGKILL) in the middle of step 11: the job stops with a
    message naming rank 1, checkpoint-8 stays whole, and resuming from it gives the uninterrupted
    curve for steps 9..20."""
    config = zero_config(work, 3, 2, 1)
    whole = os.path.join(work, "kill_whole")
    uninterrupted, _ = sft.run_ftlaunch(model_dir, data_dir, whole, 2, 1, extra=("--save_steps", "4"),
                                        launcher=("--config_file", config))
    out = os.path.join(work, "kill_resume")
    cmd = sft.ftlaunch_command(model_dir, data_dir, out, 2, 1, extra=("--save_steps", "4"), launcher=("--config_file", config))
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "FTLAUNCH_TEST_KILL_IN_STEP": "11:1"})
    stopped_in = time.time() - started
    text = proc.stdout + proc.stderr
    check(proc.returncode != 0 and "rank 1" in text and "killed by signal 9" in text and stopped_in < 120,
          f"rank 1 killed mid-step: the job stops in {stopped_in:.0f} s (exit {proc.returncode}), naming rank 1")
    checkpoints = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-"))
    check(checkpoints == ["checkpoint-4", "checkpoint-8"], f"the checkpoints before the kill are whole: {checkpoints}")
    resumed, log = sft.run_ftlaunch(model_dir, data_dir, out, 2, 1, extra=("--resume_from_checkpoint", "True"),
                                    launcher=("--config_file", config))
    steps = list(range(8, 20))
    tail = worst_curve_diff(resumed, uninterrupted, steps) if len(resumed) == 20 else float("inf")
    check("resumed from" in log and "checkpoint-8" in log and tail <= 1e-6,
          f"resumed from checkpoint-8: steps 9..20 equal the uninterrupted run, worst rel diff {tail:.2e} <= 1e-6")


def main():
    with tempfile.TemporaryDirectory() as work:
        model_dir, data_dir, texts = sft.make_inputs(work)
        with open(os.path.join(data_dir, "test.jsonl"), "w") as f:
            for t in texts[:7]:
                f.write(json.dumps({"text": t}) + "\n")
        single_dir = os.path.join(work, "single")
        single, _ = sft.run_ftlaunch(model_dir, data_dir, single_dir, 4, 1, extra=EVAL)
        first_evals = {1: ("1 rank", eval_losses(single_dir))}  # ranks -> (case, eval losses)
        cases = [(0, 4, 1, 1), (1, 2, 2, 1), (1, 4, 1, 1), (2, 2, 2, 1), (2, 4, 1, 1), (2, 2, 1, 2), (3, 2, 2, 1),
                 (3, 4, 1, 1)]
        for stage, ranks, batch, accumulation in cases:
            out = os.path.join(work, f"z{stage}_{ranks}_{batch}_{accumulation}")
            # ZeRO-3 on 4 ranks with every tensor partitioned; on 2 with DeepSpeed's default threshold.
            partition_all = stage == 3 and ranks == 4
            config = zero3_everything_partitioned(work, ranks) if partition_all else zero_config(work, stage, ranks, accumulation)
            losses, log = sft.run_ftlaunch(model_dir, data_dir, out, batch, accumulation, extra=EVAL,
                                           launcher=("--config_file", config))
            what = f"ZeRO-{stage}, {ranks} ranks x batch {batch} x accumulation {accumulation}"
            if partition_all:
                what += ", every tensor partitioned"
            curve = worst_curve_diff(losses, single)
            check(len(losses) == len(single) and curve <= 1e-5, f"{what}: loss curve vs 1 rank worst rel diff {curve:.2e} <= 1e-5")
            evals = eval_losses(out)
            baseline = first_evals.setdefault(ranks, (what, evals))
            if baseline[0] != what:
                worst = max(abs(a - b) / b for a, b in zip(evals, baseline[1])) if len(evals) == len(baseline[1]) == 2 else 1
                check(worst <= 1e-5, f"{what}: eval_loss at steps 10, 20 vs {baseline[0]} worst rel diff {worst:.2e} <= 1e-5")
            else:
                check(len(evals) == 2 and all(math.isfinite(e) for e in evals), f"{what}: eval_loss at steps 10, 20: {evals}")
            early, _ = adapter_diff(os.path.join(out, "checkpoint-5"), os.path.join(single_dir, "checkpoint-5"))
            check(early <= 1e-5, f"{what}: checkpoint-5 adapter vs 1 rank rel diff {early:.2e} <= 1e-5")
            final, _ = adapter_diff(out, single_dir)
            check(final <= 1e-5, f"{what}: final adapter vs 1 rank rel diff {final:.2e} <= 1e-5")
            if stage == 3:
                held = [tuple(map(int, m)) for m in re.findall(r"holds (\d+) bytes of the (\d+) bytes", log)]
                check(len(held) == ranks and all(s * ranks <= t + 4096 for s, t in held)
                      and all(t > 0 for s, t in held) == partition_all,
                      f"{what}: each rank holds its slice of the frozen weights {held[:1]} (bytes held, total; "
                      f"none partitioned under the default threshold)")

        check_gradient_buckets(work, model_dir, data_dir, single)
        check_bf16_frozen_linears(work, model_dir, data_dir)
        check_loading_memory(work, model_dir, data_dir)
        check_norm_family(work, model_dir, data_dir, texts, single, "qwen3", qwen3_of)
        check_norm_family(work, model_dir, data_dir, texts, single, "gemma3", gemma3_of)
        check_norm_family(work, model_dir, data_dir, texts, single, "phi3", phi3_of)
        check_norm_family(work, model_dir, data_dir, texts, single, "olmo2", olmo2_of)

        # Re-partitioning on resume: 4 ranks (stage 2) -> 2 ranks (stage 1).
        four = os.path.join(work, "resume_from_4")
        sft.run_ftlaunch(model_dir, data_dir, four, 1, 1, extra=("--save_steps", "10"),
                         launcher=("--config_file", zero_config(work, 2, 4, 1)))
        two = os.path.join(work, "resumed_on_2")
        os.makedirs(two)
        shutil.copytree(os.path.join(four, "checkpoint-10"), os.path.join(two, "checkpoint-10"))
        resumed, log = sft.run_ftlaunch(model_dir, data_dir, two, 2, 1, extra=("--resume_from_checkpoint", "True"),
                                        launcher=("--config_file", zero_config(work, 1, 2, 1)))
        steps = list(range(10, 20))
        tail = worst_curve_diff(resumed, single, steps) if len(resumed) == 20 else float("inf")
        check("resumed from" in log and tail <= 1e-5,
              f"checkpoint of 4 ranks (ZeRO-2) resumed on 2 ranks (ZeRO-1): steps 11..20 worst rel diff {tail:.2e} <= 1e-5")
        check_kill_mid_step(work, model_dir, data_dir)

        # The same checkpoint with another model (the 32-layer one): a clear error, no step.
        other = os.path.join(work, "other_model")
        os.makedirs(other)
        shutil.copytree(os.path.join(four, "checkpoint-10"), os.path.join(other, "checkpoint-10"))
        proc = subprocess.run([sft.FTLAUNCH, "--cpu", "--num_processes", "1", "train", "--model_name_or_path",
                               os.path.join(work, "big_model"), "--dataset_name", data_dir, "--splits", "train",
                               "--use_peft_lora", "True", "--lora_r", "4", "--lora_alpha", "8",
                               "--lora_target_modules", "all-linear", "--max_steps", "20", "--bf16", "False",
                               "--output_dir", other, "--resume_from_checkpoint", "True"],
                              capture_output=True, text=True, timeout=600)
        text = proc.stdout + proc.stderr
        check(proc.returncode == 2 and "a checkpoint of another run" in text and "another base model" in text
              and "step 11/" not in text, f"resume with another model: exit {proc.returncode}, a clear error")
    if failures:
        sys.exit(1)
    print("all ZeRO checks passed")


if __name__ == "__main__":
    main()
