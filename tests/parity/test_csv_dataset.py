"""CSV datasets: what ftlaunch reads from .csv split files equals datasets.load_dataset("csv")
(pandas.read_csv's defaults, then pyarrow), record by record.

  records      one file with quoted separators, doubled quotes, newlines and CRLF inside quotes,
               a byte-order mark, blank and whitespace-only lines, pandas' NA strings (quoted
               too), an int column, an int column with a gap (floats), floats with exponents, a
               bool column with a gap, a column whose one non-number makes it text, an empty and a
               repeated header name, short rows, non-ASCII text, \\r line ends: equal records
  splits       a folder with train.csv and test.csv: the splits datasets finds, each equal
  training     the SFT job on a CSV copy of test_sft_parity's dataset logs the JSON-lines run's
               losses exactly
  bad input    an unclosed quote, a row with more fields than the header, bytes that are not
               UTF-8: exit 2 naming the file (and the line)
"""
import csv
import json
import math
import os
import subprocess
import sys
import tempfile

import datasets

sys.path.insert(0, os.path.dirname(__file__))
from harness import check, finish  # noqa: E402
import test_sft_parity as sft  # noqa: E402

PROBE = os.environ["FTL_DATASET_PROBE"]

TRICKY = ('\ufefftext,count,gappy,real,flag,mixed,,count\r\n'
          '"a, ""quoted"" b",1,10,1.5,True,3,e1,x\r\n'
          '\r\n'
          '   \t \r\n'
          '"multi\nline and\r\ncrlf",2,,2e3,,4,"",y\n'
          'NA,3,30,-0.25,false,five,None,z\n'
          '"NA",4,40,.5,TRUE,6,n/a\n'
          '  lead and trail  ,5,50,7.,False,7,null,w\n'
          '"q"after,6,60,-1E-2,true,8,#N/A,v\n'
          'héllo wörld ✓,7,70,3,false,9,nan,u\n')


def ours(path, split):
    proc = subprocess.run([PROBE, path, split], capture_output=True, text=True, timeout=60)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def theirs(data_files=None, folder=None):
    loaded = datasets.load_dataset(folder, cache_dir=CACHE) if folder else \
        datasets.load_dataset("csv", data_files=data_files, cache_dir=CACHE)
    return {name: split.to_list() for name, split in loaded.items()}


def same(a, b):
    """Records equal, floats exactly, missing values None on both sides (NaN counts as missing)."""
    def norm(v):
        return None if isinstance(v, float) and math.isnan(v) else v
    return len(a) == len(b) and all({k: norm(v) for k, v in x.items()} == {k: norm(v) for k, v in y.items()}
                                    for x, y in zip(a, b))


def main():
    global CACHE
    with tempfile.TemporaryDirectory() as work:
        CACHE = os.path.join(work, "hf_cache")
        tricky = os.path.join(work, "tricky.csv")
        with open(tricky, "w", encoding="utf-8", newline="") as f:
            f.write(TRICKY)
        rc, records, err = ours(tricky, "train")
        reference = theirs(data_files={"train": tricky})["train"]
        check(rc == 0 and same(records, reference),
              f"tricky CSV: {len(records)} records equal datasets' {len(reference)} ({err.strip()[:200]})")
        if not same(records, reference):
            for a, b in zip(records, reference):
                print("  ours  ", a, "\n  theirs", b)
        cr_only = os.path.join(work, "cr.csv")
        with open(cr_only, "w", encoding="utf-8", newline="") as f:
            f.write("text,n\r'one',1\r\"two\rlines\",2\r")
        rc, records, _ = ours(cr_only, "train")
        check(rc == 0 and same(records, theirs(data_files={"train": cr_only})["train"]), f"\\r line ends: {records}")

        folder = os.path.join(work, "folder")
        os.makedirs(folder)
        for split, rows in (("train", [["a", 1], ["b,c", 2]]), ("test", [["d", 3]])):
            with open(os.path.join(folder, f"{split}.csv"), "w", newline="") as f:
                csv.writer(f).writerows([["text", "label"], *rows])
        reference = theirs(folder=folder)
        found = {split: ours(folder, split) for split in reference}
        check(sorted(reference) == ["test", "train"] and all(rc == 0 and same(r, reference[s]) for s, (rc, r, _) in found.items()),
              f"a folder of train.csv and test.csv: splits {sorted(reference)}, each equal")

        # Training reads CSV as it reads JSON lines.
        model_dir, data_dir, texts = sft.make_inputs(work)
        csv_dir = os.path.join(work, "data_csv")
        os.makedirs(csv_dir)
        with open(os.path.join(csv_dir, "train.csv"), "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["text"], *[[t] for t in texts]])
        from_csv, _ = sft.run_ftlaunch(model_dir, csv_dir, os.path.join(work, "run_csv"), 2, 1)
        from_jsonl, _ = sft.run_ftlaunch(model_dir, data_dir, os.path.join(work, "run_jsonl"), 2, 1)
        check(from_csv == from_jsonl, f"SFT on train.csv logs the JSON-lines run's losses exactly ({len(from_csv)} steps)")

        for name, content, expected in (("unclosed.csv", 'text\n"never closed\n', ':2: a quoted field is not closed'),
                                        ("wide.csv", "text,n\na,1\nb,2,3\n", ":3: 3 fields where the header has 2"),
                                        ("latin1.csv", "text\ncaf\xe9\n", "not UTF-8")):
            path = os.path.join(work, name)
            with open(path, "wb") as f:
                f.write(content.encode("latin-1"))
            rc, _, err = ours(path, "train")
            check(rc == 2 and path in err and expected in err, f"{name}: exit {rc}, {err.strip()[:160]}")
    finish("CSV datasets read as datasets reads them")


if __name__ == "__main__":
    main()
