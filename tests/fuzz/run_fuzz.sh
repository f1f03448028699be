#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time, as
# many at once as there are cores.
#   run_fuzz.sh SOURCE_DIR WORK_DIR [SECONDS_PER_TARGET] [TARGET...]
# Each target starts from its seed corpus in tests/fuzz/corpus/<name> (plus configs/ for the
# accelerate config) and keeps what it learns in WORK_DIR/corpus_<name>. A crash, sanitizer
# report, leak, timeout or uncaught exception fails the run; the reproducer is left in
# WORK_DIR/<name>/ (crash-..., leak-...). Replay one with: WORK_DIR/fuzz_<name> FILE. The mutation
# seed is fixed (-seed=1), so a run on the same machine explores the same inputs.
# Environment: FTL_FUZZ_CXX (clang++), FTL_FUZZ_ARROW_INCLUDE and FTL_FUZZ_ARROW_LIBS (pyarrow's
# headers and libarrow/libparquet, ':'-separated; without them parquet/arrow files are refused
# as in a build without Arrow), FTL_FUZZ_TOKENIZER (the tokenizer.json fuzz_dataset uses).
set -euo pipefail
src="$(cd "$1" && pwd)"
mkdir -p "$2"
work="$(cd "$2" && pwd)"
seconds="${3:-60}"
shift $(( $# < 3 ? $# : 3 ))
targets=(safetensors_header tokenizer_json accelerate_config deepspeed_json dataset manifest row_cache chat_template)
[ "$#" -eq 0 ] || targets=("$@")

cxx="${FTL_FUZZ_CXX:-clang++}"
if ! command -v "$cxx" >/dev/null; then
  echo "run_fuzz: $cxx not found (scripts/setup.sh installs clang)" >&2
  exit 1
fi
launcher=""
command -v ccache >/dev/null && launcher="ccache"
flags=(-std=c++20 -O1 -g -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
       -I"$src/lib" -I"$src/tests/fuzz" -DFTL_HAVE_UTF8PROC -msse4.2)
yaml_include=$(pkg-config --cflags yaml-cpp 2>/dev/null || true)
arrow_flags=() arrow_libs=()
if [ -n "${FTL_FUZZ_ARROW_INCLUDE:-}" ] && [ -n "${FTL_FUZZ_ARROW_LIBS:-}" ]; then
  arrow_flags=(-DFTL_HAVE_ARROW -isystem "$FTL_FUZZ_ARROW_INCLUDE")
  IFS=':' read -r -a arrow_libs <<<"$FTL_FUZZ_ARROW_LIBS"
  for lib in "${arrow_libs[@]}"; do arrow_libs+=("-Wl,-rpath,$(dirname "$lib")"); done
fi

# Sources of each target (besides tests/fuzz/fuzz_<name>.cpp) and the system libraries it links.
util=(util/error util/strings util/files)
tokenizer=(tokenizer/text tokenizer/piece tokenizer/bpe tokenizer/pipeline tokenizer/normalizers tokenizer/pre_tokenizers tokenizer/tokenizer)
jinja=(jinja/value jinja/lexer jinja/parser jinja/python jinja/lookup jinja/filters jinja/render)
config=(config/yaml_reader config/accelerate_config config/deepspeed_config config/deepspeed_sections config/train_args config/run_config)
sources_of() {
  case "$1" in
    safetensors_header) echo io/safetensors "${util[@]}" ;;
    tokenizer_json)     echo "${tokenizer[@]}" "${util[@]}" ;;
    accelerate_config|deepspeed_json) echo "${config[@]}" "${util[@]}" util/log ;;
    dataset)   echo data/dataset data/csv_reader data/examples data/best_fit_packing data/arrow_reader "${tokenizer[@]}" tokenizer/hf_tokenizer tokenizer/tokenizer_class \
                    tokenizer/chat_format tokenizer/chat_renderer "${jinja[@]}" "${util[@]}" ;;
    chat_template) echo "${jinja[@]}" "${util[@]}" ;;
    manifest)  echo io/manifest io/atomic_file util/checksum "${util[@]}" ;;
    row_cache) echo data/row_cache io/safetensors io/safetensors_writer io/atomic_file "${util[@]}" ;;
  esac
}
libs_of() {
  case "$1" in
    tokenizer_json) echo -lpcre2-8 -lutf8proc ;;
    accelerate_config|deepspeed_json) echo -lyaml-cpp -lspdlog -lfmt ;;
    dataset) echo -lpcre2-8 -lutf8proc "${arrow_libs[@]}" ;;
    chat_template) echo -lutf8proc ;;
  esac
}

# Objects are compiled once per source (ccache makes a rebuild cheap), as many at once as there
# are cores, then each target linked.
objects="$work/obj"
mkdir -p "$objects"
object_of() { echo "$objects/${1//\//_}.o"; }
compile() {  # compile STEM: lib/STEM.cpp, or tests/fuzz/STEM.cpp for a target's own file
  local source="$src/lib/$1.cpp"
  [ -f "$source" ] || source="$src/tests/fuzz/$1.cpp"
  # shellcheck disable=SC2086
  $launcher "$cxx" "${flags[@]}" $yaml_include "${arrow_flags[@]}" -c "$source" -o "$(object_of "$1")"
}
echo "run_fuzz: building ${targets[*]}"
declare -A stems=()
for target in "${targets[@]}"; do
  for stem in fuzz_"$target" $(sources_of "$target"); do stems[$stem]=1; done
done
jobs_running=0
for stem in "${!stems[@]}"; do
  compile "$stem" &
  jobs_running=$((jobs_running + 1))
  if [ "$jobs_running" -ge "$(nproc)" ]; then wait -n; jobs_running=$((jobs_running - 1)); fi
done
while [ "$jobs_running" -gt 0 ]; do wait -n; jobs_running=$((jobs_running - 1)); done
for target in "${targets[@]}"; do
  objs=()
  for stem in fuzz_"$target" $(sources_of "$target"); do objs+=("$(object_of "$stem")"); done
  # shellcheck disable=SC2046
  "$cxx" -fsanitize=fuzzer,address,undefined "${objs[@]}" -o "$work/fuzz_$target" $(libs_of "$target")
done

# Run the targets, as many at once as there are cores; each in its own folder for reproducers.
export FTL_FUZZ_TOKENIZER="${FTL_FUZZ_TOKENIZER:-$src/tests/parity/data/llama2_style_tokenizer.json}"
run_one() {
  local target="$1" dir="$work/$1"
  local seeds=("$src/tests/fuzz/corpus/$target")
  [ "$target" = accelerate_config ] && seeds+=("$src/configs")
  rm -rf "$dir" && mkdir -p "$dir" "$work/corpus_$target"
  (cd "$dir" && "$work/fuzz_$target" -seed=1 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
     "$work/corpus_$target" "${seeds[@]}" >"$dir/log" 2>&1) || true
  if ls "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-* >/dev/null 2>&1 || ! grep -q "^Done" "$dir/log"; then
    echo "run_fuzz: fuzz_$target FAILED; its log ends:"
    tail -40 "$dir/log"
    ls "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-* 2>/dev/null || true
    return 1
  fi
  echo "run_fuzz: fuzz_$target ok: $(grep -E '^Done' "$dir/log")"
}
status=0
running=0
for target in "${targets[@]}"; do
  echo "run_fuzz: fuzz_$target for ${seconds}s"
  run_one "$target" &
  running=$((running + 1))
  if [ "$running" -ge "$(nproc)" ]; then
    wait -n || status=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || status=1
  running=$((running - 1))
done
exit $status
