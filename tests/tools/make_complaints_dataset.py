"""Writes examples/data/twitter_complaints_tiny: a small synthetic stand-in for RAFT's
twitter_complaints (ought/raft), in the layout the seq2seq example reads. Columns as RAFT's:
"Tweet text", "ID", "Label" (0 Unlabeled, 1 complaint, 2 no complaint, named in
dataset_info.json as datasets' ClassLabel). 50 labelled training tweets (as RAFT) and 20
unlabelled test tweets, made from templates with a fixed seed, so the files are reproducible:
  python tests/tools/make_complaints_dataset.py examples/data/twitter_complaints_tiny
"""
import json
import os
import random
import sys

BRANDS = ["@SkyJet", "@FastMail", "@CityBank", "@PhoneCo", "@QuickShip", "@MetroRail", "@CloudBox", "@SunAir"]
COMPLAINTS = [
    "my order is late again and nobody answers",
    "the app keeps crashing, this is broken",
    "I was charged twice and still no refund",
    "worst service ever, waited two hours on hold",
    "my package arrived damaged, very disappointed",
    "the train was cancelled and no one told us",
    "still no internet after three days, terrible",
    "lost my bag and support is useless",
]
PRAISE = [
    "thanks for the quick help today",
    "great service, my package came early",
    "loving the new update, works well",
    "the staff were friendly and helpful",
    "what a smooth flight, thank you",
    "happy with my new plan, good value",
    "just signed up, looking forward to it",
    "nice job on the new website",
]


def tweets(rng, count, labelled):
    rows = []
    for i in range(count):
        complaint = rng.random() < 0.5
        text = f"{rng.choice(BRANDS)} {rng.choice(COMPLAINTS if complaint else PRAISE)}"
        rows.append({"Tweet text": text, "ID": i, "Label": (1 if complaint else 2) if labelled else 0})
    return rows


def main(folder):
    rng = random.Random(7)
    os.makedirs(folder, exist_ok=True)
    for split, count, labelled in (("train", 50, True), ("test", 20, False)):
        with open(os.path.join(folder, f"{split}.jsonl"), "w") as f:
            for row in tweets(rng, count, labelled):
                f.write(json.dumps(row) + "\n")
    info = {"description": "Synthetic stand-in for RAFT twitter_complaints (ftlaunch tests)",
            "features": {"Tweet text": {"dtype": "string", "_type": "Value"},
                         "ID": {"dtype": "int32", "_type": "Value"},
                         "Label": {"names": ["Unlabeled", "complaint", "no complaint"], "_type": "ClassLabel"}}}
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
