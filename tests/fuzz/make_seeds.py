"""Writes the fuzz targets' seed corpus (tests/fuzz/corpus/<target>/): one valid input of each
shape a target reads, so fuzzing starts from the interesting structures. The files are committed;
run this again (with the setup virtualenv's python, which has pyarrow and safetensors) only to
change them.   python tests/fuzz/make_seeds.py
"""
import io
import json
import os
import struct

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(CORPUS, target), exist_ok=True)
    with open(os.path.join(CORPUS, target, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def safetensors_bytes(tensors, metadata):
    """tensors: name -> (dtype, shape, raw bytes); the layout of the safetensors format."""
    header, offset, payload = {}, 0, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        payload += raw
    header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def crc32c(data):
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as util/checksum computes it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def safetensors_seeds():
    put("safetensors_header", "valid", safetensors_bytes(
        {"a": ("F32", [2, 2], bytes(16)), "b": ("BF16", [3], bytes(6))}, {"format": "pt"}))


def tokenizer_seeds():
    tok = {"version": "1.0",
           "added_tokens": [{"id": 5, "content": "<s>", "single_word": False, "lstrip": True, "rstrip": False,
                             "normalized": False, "special": True}],
           "normalizer": {"type": "Sequence", "normalizers": [
               {"type": "Prepend", "prepend": "\u2581"},
               {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
           "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
               {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}| ?\\p{L}+"}, "behavior": "Isolated", "invert": False},
               {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
           "post_processor": {"type": "TemplateProcessing",
                              "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                              "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [5], "tokens": ["<s>"]}}},
           "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"},
                                                        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
           "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>", "fuse_unk": True,
                     "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "<0x41>": 4, "<s>": 5}, "merges": [["a", "b"]]}}
    put("tokenizer_json", "bpe_sequence.json", json.dumps(tok))


def config_seeds():
    # The repository's configs/*.yaml are seeds too (run_fuzz.sh passes that folder).
    put("accelerate_config", "fsdp.yaml", "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\n"
        "fsdp_config:\n  fsdp_sharding_strategy: FULL_SHARD\n  fsdp_offload_params: true\n"
        "  fsdp_state_dict_type: SHARDED_STATE_DICT\nmixed_precision: bf16\nnum_machines: 2\nmachine_rank: 1\n"
        "main_process_ip: 10.0.0.1\nmain_process_port: 29500\nnum_processes: 16\n")
    put("accelerate_config", "json_config.json", json.dumps(
        {"distributed_type": "MULTI_GPU", "num_processes": 2, "mixed_precision": "fp16", "gpu_ids": "0,1",
         "downcast_bf16": "no", "use_cpu": False}))
    put("deepspeed_json", "zero3_offload_auto.json", json.dumps(
        {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
         "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto", "loss_scale": 0, "initial_scale_power": 16},
         "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
         "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                       "warmup_num_steps": "auto"}},
         "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                               "offload_param": {"device": "nvme", "nvme_path": "/local_nvme"},
                               "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto",
                               "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto",
                               "stage3_max_live_parameters": 1e9, "stage3_gather_16bit_weights_on_model_save": True},
         "aio": {"block_size": 1048576, "queue_depth": 8}}, indent=1))
    put("deepspeed_json", "zero2_fp16.json", json.dumps(
        {"train_batch_size": 16, "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 8,
         "fp16": {"enabled": True}, "zero_optimization": {"stage": 2, "allgather_bucket_size": 5e8}}))


def dataset_seeds():
    """fuzz_dataset inputs: a mode byte, a row-length byte, then the file (see fuzz_dataset.cpp)."""
    text_rows = [{"text": "Hello world, 12345 tokens"}, {"text": "a b ab 你好"}]
    chat_rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
                               {"role": "assistant", "content": "Hello."}]}]
    jsonl = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    put("dataset", "jsonl_text", bytes([0x00 | 16 | 32 | 64, 16]) + jsonl(text_rows))
    put("dataset", "json_list_text", bytes([0x01, 40]) + json.dumps(text_rows).encode())
    put("dataset", "jsonl_chat_assistant_only", bytes([0x00 | 4 | 8, 63]) + jsonl(chat_rows))
    table = pa.Table.from_pylist(text_rows)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    put("dataset", "parquet_text", bytes([0x02 | 64, 8]) + sink.getvalue())
    chat_table = pa.Table.from_pylist(chat_rows)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, chat_table.schema) as writer:
        writer.write_table(chat_table)
    put("dataset", "arrow_chat", bytes([0x03 | 4, 63]) + sink.getvalue())
    pretokenized = [{"input_ids": [1, 5, 9, 2], "labels": [-100, 5, 9, 2]}, {"input_ids": [3, 4], "assistant_masks": [0, 1]},
                    {"input_ids": [7, 8, 9]}]
    put("dataset", "jsonl_pretokenized", bytes([0x00 | 64, 3]) + jsonl(pretokenized))
    table = pa.Table.from_pylist([{"input_ids": r["input_ids"]} for r in pretokenized])
    sink = io.BytesIO()
    pq.write_table(table, sink)
    put("dataset", "parquet_pretokenized", bytes([0x02, 8]) + sink.getvalue())
    pairs = [{"prompt": "Q: 2+2? ", "completion": "A: 4"}, {"prompt": "Say hi", "completion": "hi</s>"}]
    put("dataset", "jsonl_prompt_completion_bfd", bytes([0x00 | 64, 0x40 | 6]) + jsonl(pairs))
    masked = [{"input_ids": [1, 5, 9, 2], "completion_mask": [0, 0, 1, 1], "assistant_masks": [0, 1, 1, 0]}]
    put("dataset", "jsonl_completion_mask_bfd_split", bytes([0x00 | 64, 0x80 | 3]) + jsonl(masked))
    csv_text = '\ufefftext,n,,n\r\n"a, ""b""\nc",1,x,NA\r\n\r\n  plain ,2\n"q"after,,"",True\n'
    put("dataset", "csv_text", bytes([0x80 | 16 | 64, 12]) + csv_text.encode())


def checkpoint_seeds():
    weights = bytes(range(64))
    state = b'{"global_step": 3}'
    manifest = {"format": "ftlaunch-checkpoint", "version": 1,
                "files": {"adapter_model.safetensors": {"bytes": 64, "crc32c": f"{crc32c(weights):08x}"},
                          "trainer_state.json": {"bytes": len(state), "crc32c": f"{crc32c(state):08x}"}},
                "identity": {"world_size": 2, "zero_stage": 3}}
    put("manifest", "valid.json", json.dumps(manifest, indent=2))
    # Once raised nlohmann's type_error instead of ftl::Error: values of the wrong JSON type.
    put("manifest", "regress_version_string.json", json.dumps({**manifest, "version": "1"}))
    put("manifest", "regress_format_number.json", json.dumps({**manifest, "format": 7}))
    wrong_bytes = json.loads(json.dumps(manifest))
    wrong_bytes["files"]["trainer_state.json"]["bytes"] = "18"
    put("manifest", "regress_bytes_string.json", json.dumps(wrong_bytes))
    put("manifest", "regress_identity_list.json", json.dumps({**manifest, "identity": [1, 2]}))
    rows = [[1, 2, 3], [4, 5]]
    flat = [t for r in rows for t in r]
    offsets = [0, 3, 5]
    i32 = lambda v: struct.pack(f"<{len(v)}i", *v)
    put("row_cache", "two_rows.safetensors", safetensors_bytes(
        {"offsets": ("I64", [3], struct.pack("<3q", *offsets)), "input_ids": ("I32", [5], i32(flat)),
         "labels": ("I32", [5], i32([-100, 2, 3, -100, 5])), "position_ids": ("I32", [5], i32([0, 1, 2, 0, 1]))},
        {"format": "ftlaunch-rows-1", "key": "fuzz"}))
    # Once read past the columns: a middle offset beyond the token count, decreasing afterwards.
    put("row_cache", "regress_offset_past_end.safetensors", safetensors_bytes(
        {"offsets": ("I64", [3], struct.pack("<3q", 0, 100, 5)), "input_ids": ("I32", [5], i32(flat)),
         "labels": ("I32", [5], i32(flat)), "position_ids": ("I32", [5], i32(flat))},
        {"format": "ftlaunch-rows-1", "key": "fuzz"}))


def chat_template_seeds():
    """The templates of the chat template parity test (the shapes models ship, and the rest the
    renderer supports)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        "chat_templates", os.path.join(HERE, "..", "parity", "test_chat_templates.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, template in module.TEMPLATES.items():
        put("chat_template", name + ".jinja", template)


if __name__ == "__main__":
    safetensors_seeds()
    tokenizer_seeds()
    config_seeds()
    dataset_seeds()
    checkpoint_seeds()
    chat_template_seeds()
