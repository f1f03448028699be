#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time.
#   run_fuzz.sh SOURCE_DIR WORK_DIR [SECONDS_PER_TARGET]
# A crash, sanitizer report, leak or uncaught exception fails the run; the reproducer is left in
# WORK_DIR. Binaries are rebuilt only when a source is newer (ccache also helps).
set -euo pipefail
src="$1"
work="$2"
seconds="${3:-20}"
mkdir -p "$work"
cxx="${FTL_FUZZ_CXX:-clang++}"
if ! command -v "$cxx" >/dev/null; then
  echo "run_fuzz: $cxx not found (scripts/setup.sh installs clang)" >&2
  exit 1
fi
launcher=""
command -v ccache >/dev/null && launcher="ccache"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I"$src/lib" -DFTL_HAVE_UTF8PROC)

build() {  # build NAME SOURCES... -- LIBS...
  local name="$1"; shift
  local sources=() libs=()
  while [ "$1" != "--" ]; do sources+=("$1"); shift; done
  shift
  libs=("$@")
  local out="$work/$name"
  local newest
  newest=$(ls -t "${sources[@]}" "$src/tests/fuzz/run_fuzz.sh" | head -1)
  if [ ! -x "$out" ] || [ "$newest" -nt "$out" ]; then
    echo "run_fuzz: building $name"
    $launcher "$cxx" "${flags[@]}" "${sources[@]}" -o "$out" "${libs[@]}"
  fi
}

util=("$src/lib/util/error.cpp" "$src/lib/util/strings.cpp" "$src/lib/util/files.cpp")
build fuzz_safetensors_header "$src/tests/fuzz/fuzz_safetensors_header.cpp" "$src/lib/io/safetensors.cpp" \
  "${util[@]}" --
build fuzz_tokenizer_json "$src/tests/fuzz/fuzz_tokenizer_json.cpp" "$src"/lib/tokenizer/{text,bpe,pipeline,tokenizer}.cpp \
  "${util[@]}" -- -lpcre2-8 -lutf8proc

# Seed corpora: a valid file of each kind, so the fuzzer starts from the interesting shapes.
seeds="$work/seeds"
mkdir -p "$seeds/safetensors" "$seeds/tokenizer"
python3 - "$seeds" <<'PY'
import json, struct, sys
seeds = sys.argv[1]
header = json.dumps({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                     "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]},
                     "__metadata__": {"format": "pt"}}).encode()
open(f"{seeds}/safetensors/valid", "wb").write(struct.pack("<Q", len(header)) + header + bytes(22))
tok = {"version": "1.0", "added_tokens": [{"id": 5, "content": "<s>", "single_word": False, "lstrip": True,
                                           "rstrip": False, "normalized": False, "special": True}],
       "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                          {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
       "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
           {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}| ?\\p{L}+"}, "behavior": "Isolated", "invert": False},
           {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]},
       "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                                    {"Sequence": {"id": "A", "type_id": 0}}],
                          "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [5], "tokens": ["<s>"]}}},
       "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"},
                                                    {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
       "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>", "fuse_unk": True,
                 "vocab": {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "<0x41>": 4, "<s>": 5},
                 "merges": [["a", "b"]]}}
open(f"{seeds}/tokenizer/valid.json", "w").write(json.dumps(tok))
PY

status=0
for target in safetensors_header:safetensors tokenizer_json:tokenizer; do
  name="fuzz_${target%%:*}"
  corpus="$work/corpus_${target##*:}"
  mkdir -p "$corpus"
  echo "run_fuzz: $name for ${seconds}s"
  if ! (cd "$work" && "./$name" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "$corpus" "$seeds/${target##*:}" 2>&1 | tail -25); then
    status=1
  fi
  # libFuzzer exits non-zero on a finding; the pipe above hides it, so check for reproducers.
  if ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* >/dev/null 2>&1; then
    echo "run_fuzz: $name found a failing input:" "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null
    status=1
  fi
done
exit $status
