"""ftlaunch's 4-bit quantisation against bitsandbytes itself (its CPU path), bit for bit.

Random matrices of awkward shapes (odd element counts, a short last block, all-zero blocks,
values far apart in scale), in float32, bfloat16 and float16, are quantised by
bitsandbytes.functional.quantize_4bit and by ftl_quant_probe, for NF4 and FP4, with and without
nested (double) quantisation, with uint8 and bfloat16 quant storage. Checked, all exactly:
  packed bytes (in the storage dtype), absmax, nested absmax, nested code map, nested offset,
  bit for bit; the dequantised weight (bitsandbytes.functional.dequantize_4bit) equal value for
  value: bitsandbytes itself returns FP4 code 8 as -0.0 from its native kernel and as +0.0 from
  its fallback (odd last dimension), so the sign of that zero is not compared;
  the dynamic 8-bit map against bitsandbytes.functional.create_dynamic_map().
8-bit blockwise (bitsandbytes' 8-bit optimizers keep their moments so; blocksize 256): the same
float32 matrices with the signed dynamic map and their absolute values with the unsigned one,
codes and absmax against bitsandbytes' quantize_blockwise, bit for bit; both maps too.
Memory: NF4 + nested state of a 4096 x 4096 weight is at most 0.28x its bfloat16 bytes.
"""
import os
import subprocess
import tempfile

import torch
import bitsandbytes.functional as F
from safetensors.torch import load_file, save_file

from harness import check, finish
import bnb_portable  # noqa: F401  (bitsandbytes' portable 4-bit kernels, the same on every CPU)

PROBE = os.environ["FTL_QUANT_PROBE"]


def inputs():
    g = torch.Generator().manual_seed(7)
    cases = {
        "odd_7x9": torch.randn(7, 9, generator=g),                      # 63 elements: odd, one short block
        "square_64": torch.randn(64, 64, generator=g) * 0.02,
        "tail_3x1000": torch.randn(3, 1000, generator=g),               # 3000 = 46 blocks + 56
        "wide_128x70": torch.randn(128, 70, generator=g) * 5.0,
        "many_blocks_300x257": torch.randn(300, 257, generator=g),      # 301 absmax blocks: 2 nested blocks
        "tiny_values": torch.randn(16, 16, generator=g) * 1e-4,         # FP4 near zero (+0 / -0 codes)
    }
    zero = torch.randn(8, 64, generator=g)
    zero[2:4] = 0.0                                                     # whole zero blocks
    cases["zero_blocks_8x64"] = zero
    scales = torch.randn(32, 128, generator=g) * torch.logspace(-4, 2, 32).unsqueeze(1)
    cases["mixed_scales_32x128"] = scales
    return cases


def bnb_outputs(x, quant_type, nested, storage):
    packed, state = F.quantize_4bit(x, blocksize=64, compress_statistics=nested, quant_type=quant_type,
                                    quant_storage=storage)
    out = {"packed": packed, "absmax": state.absmax, "dequantized": F.dequantize_4bit(packed, state)}
    if nested:
        out["nested_absmax"] = state.state2.absmax
        out["nested_code"] = state.state2.code
        out["offset"] = state.offset.reshape(1).float()
    return out


def same_bits(a, b):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.is_floating_point():
        return torch.equal(a.view(torch.uint8) if a.element_size() == 1 else a.contiguous().view(torch.int16 if a.element_size() == 2 else torch.int32),
                           b.view(torch.uint8) if b.element_size() == 1 else b.contiguous().view(torch.int16 if b.element_size() == 2 else torch.int32))
    return torch.equal(a, b)


def main():
    check(same_bits(torch.tensor(F.create_dynamic_map().tolist()), load_dynamic_map()),
          "dynamic 8-bit map equals bitsandbytes' create_dynamic_map() bit for bit")
    base = inputs()
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            tensors = {name: t.to(dtype).contiguous() for name, t in base.items()}
            src = os.path.join(tmp, "in.safetensors")
            save_file(tensors, src)
            for quant_type in ("nf4", "fp4"):
                for nested in (False, True):
                    for storage in (torch.uint8, torch.bfloat16):
                        out = os.path.join(tmp, "out.safetensors")
                        storage_name = str(storage).replace("torch.", "")
                        args = [PROBE, src, out, "--type", quant_type, "--nested", "1" if nested else "0",
                                "--storage", storage_name]
                        ok = subprocess.run(args, capture_output=True, text=True)
                        label = f"{str(dtype)[6:]} {quant_type} nested={int(nested)} storage={storage_name}"
                        if not check(ok.returncode == 0, f"{label}: ftl_quant_probe ran ({ok.stderr.strip()[-300:]})"):
                            continue
                        ours = load_file(out)
                        bad = []
                        for name, x in tensors.items():
                            if storage != torch.uint8 and (x.numel() + 1) // 2 % 2:
                                continue  # bfloat16 storage needs an even byte count (checked below)
                            ref = bnb_outputs(x, quant_type, nested, storage)
                            for key, value in ref.items():
                                mine = ours[f"{name}.{key}"]
                                equal = (mine.dtype == value.dtype and torch.equal(mine, value)) if key == "dequantized" \
                                    else same_bits(mine, value)
                                if not equal:
                                    bad.append(f"{name}.{key}")
                        check(not bad, f"{label}: packed, absmax, nested state and dequantised weights bit-identical "
                                       f"to bitsandbytes on {len(tensors)} shapes {bad[:6]}")
        # bfloat16 storage of an odd byte count: bitsandbytes' view() fails; ours says why.
        save_file({"odd": torch.randn(3, 3)}, os.path.join(tmp, "odd.safetensors"))
        r = subprocess.run([PROBE, os.path.join(tmp, "odd.safetensors"), os.path.join(tmp, "o.safetensors"),
                            "--type", "nf4", "--nested", "0", "--storage", "bfloat16"], capture_output=True, text=True)
        check(r.returncode != 0 and "not a multiple of the 2-byte" in r.stderr and "odd" in r.stderr,
              f"bfloat16 storage of 5 bytes is refused naming the tensor: {r.stderr.strip()}")
        r = subprocess.run([PROBE, os.path.join(tmp, "odd.safetensors"), os.path.join(tmp, "o.safetensors"),
                            "--type", "int4"], capture_output=True, text=True)
        check(r.returncode != 0 and "nf4 or fp4" in r.stderr, f"unknown quant type refused: {r.stderr.strip()}")
        src = os.path.join(tmp, "in8.safetensors")
        save_file({name: t.float().contiguous() for name, t in base.items()}, src)
        out = os.path.join(tmp, "out8.safetensors")
        ok = subprocess.run([PROBE, src, out, "--eight_bit", "1"], capture_output=True, text=True)
        if check(ok.returncode == 0, f"ftl_quant_probe --eight_bit 1 ran ({ok.stderr.strip()[-300:]})"):
            ours = load_file(out)
            maps = {"signed": F.create_dynamic_map(signed=True), "unsigned": F.create_dynamic_map(signed=False)}
            check(same_bits(maps["unsigned"], ours["unsigned_dynamic_map"]),
                  "unsigned dynamic 8-bit map equals create_dynamic_map(signed=False) bit for bit")
            bad = []
            for name, x in base.items():
                for kind, code in maps.items():
                    values = x.float().contiguous() if kind == "signed" else x.float().abs().contiguous()
                    codes, absmax = torch.ops.bitsandbytes.quantize_blockwise(values, code, 256)
                    if not (torch.equal(ours[f"{name}.{kind}_codes"], codes) and same_bits(ours[f"{name}.{kind}_absmax"], absmax)):
                        bad.append(f"{name} {kind}")
            check(not bad, f"8-bit blockwise codes and absmax equal bitsandbytes' quantize_blockwise, signed and "
                           f"unsigned maps ({len(base)} matrices; differing: {bad})")
        # Memory: 4-bit codes + nested state against bfloat16.
        big = torch.randn(4096, 4096)
        save_file({"w": big}, os.path.join(tmp, "big.safetensors"))
        subprocess.run([PROBE, os.path.join(tmp, "big.safetensors"), os.path.join(tmp, "b.safetensors"),
                        "--type", "nf4", "--nested", "1", "--storage", "bfloat16"], check=True)
        q = load_file(os.path.join(tmp, "b.safetensors"))
        quant_bytes = sum(q[f"w.{k}"].numel() * q[f"w.{k}"].element_size()
                          for k in ("packed", "absmax", "nested_absmax", "nested_code", "offset"))
        ratio = quant_bytes / (big.numel() * 2)
        check(ratio <= 0.28, f"NF4 + nested state of 4096x4096: {quant_bytes} bytes = {ratio:.4f}x bfloat16 (<= 0.28)")
    finish("4-bit quantisation matches bitsandbytes")


def load_dynamic_map():
    with tempfile.TemporaryDirectory() as tmp:
        save_file({"x": torch.zeros(64, 64)}, os.path.join(tmp, "x.safetensors"))
        subprocess.run([PROBE, os.path.join(tmp, "x.safetensors"), os.path.join(tmp, "m.safetensors"), "--type", "nf4"],
                       check=True)
        return load_file(os.path.join(tmp, "m.safetensors"))["dynamic_map"]


if __name__ == "__main__":
    main()
