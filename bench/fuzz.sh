#!/usr/bin/env bash
# Runs the libFuzzer targets (tests/fuzz) for as long as asked, each from its seed corpus plus
# what earlier runs here learned (kept in WORK_DIR/corpus_<name>):
#   bash bench/fuzz.sh SECONDS_PER_TARGET [TARGET...]      e.g. bash bench/fuzz.sh 3600 dataset
# WORK_DIR is build/fuzz-long (FTL_FUZZ_WORK overrides). A finding fails the run and leaves its
# reproducer in WORK_DIR/<name>/; add it to tests/fuzz/corpus/<name>/ with the fix, so the suite
# replays it from then on. Arrow (parquet/arrow datasets) comes from the setup virtualenv's pyarrow.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:?usage: bench/fuzz.sh SECONDS_PER_TARGET [TARGET...]}"
shift
python="${FTLAUNCH_VENV:-$HOME/.cache/ftlaunch/venv}/bin/python"
if pyarrow_dir=$("$python" -c 'import os, pyarrow; print(os.path.dirname(pyarrow.__file__))' 2>/dev/null); then
  export FTL_FUZZ_ARROW_INCLUDE="$pyarrow_dir/include"
  FTL_FUZZ_ARROW_LIBS="$(ls "$pyarrow_dir"/libarrow.so.[0-9]* | head -1):$(ls "$pyarrow_dir"/libparquet.so.[0-9]* | head -1)"
  export FTL_FUZZ_ARROW_LIBS
fi
exec bash tests/fuzz/run_fuzz.sh . "${FTL_FUZZ_WORK:-build/fuzz-long}" "$seconds" "$@"
