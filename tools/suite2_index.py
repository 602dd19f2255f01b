#!/usr/bin/python3
"""Lay out one seed of the second checkpoint suite (tools/train_suite2.sh) like data/suite/.

  /usr/bin/python3 tools/suite2_index.py data/build/suite2/seed-0 [--command "..."]

lm_trainer writes its checkpoints, checkpoints.json (a list: step, tokens_seen, train and
validation loss) and training state into SEED_DIR/train/. This tool makes SEED_DIR itself read like
data/suite/: a relative symlink step-NNNNNN -> train/step-NNNNNN per complete checkpoint, the
tokenizer, and a checkpoints.json in data/suite's format (model_config, parameters counted from the
step-0 weights' safetensors header, tokenizer, data, training, checkpoints with dir and
tokens_seen), which `saeflow report` reads beside each model directory. The trainer's own file is
left alone (a resume reads it). Rerun it any time: it reflects the checkpoints saved so far.
"""
import argparse
import json
import os
import struct
import sys


def count_parameters(st_path):
    """Elements of every tensor in a safetensors file (tied embeddings are stored once)."""
    with open(st_path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        if n > 100 << 20:
            sys.exit("%s: header of %d bytes is not a safetensors header" % (st_path, n))
        header = json.loads(f.read(n))
    total = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        size = 1
        for d in t["shape"]:
            size *= d
        total += size
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("seed_dir")
    ap.add_argument("--settings", default="", help="JSON object: the run's settings (train_suite2.sh passes them)")
    args = ap.parse_args()
    train = os.path.join(args.seed_dir, "train")
    src = os.path.join(train, "checkpoints.json")
    if not os.path.exists(src):
        sys.exit("%s: no checkpoints yet (run tools/train_suite2.sh first)" % src)
    with open(src) as f:
        saves = json.load(f)
    if not saves or saves[0]["step"] != 0:
        sys.exit("%s: the first checkpoint is not step 0" % src)
    first = os.path.join(train, saves[0]["checkpoint"])
    with open(os.path.join(first, "config.json")) as f:
        config = json.load(f)
    settings = json.loads(args.settings) if args.settings else {}
    checkpoints = []
    for e in saves:
        name = e["checkpoint"]
        link = os.path.join(args.seed_dir, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join("train", name), link)
        checkpoints.append({"step": e["step"], "dir": name, "tokens_seen": e["tokens_seen"],
                            "train_loss": e["train_loss"], "valid_loss": e["val_loss"],
                            "valid_sequences": e["val_seqs"], "dtype": e["dtype"]})
    tok = os.path.join(args.seed_dir, "tokenizer.model")
    if not os.path.lexists(tok):
        os.symlink(os.path.relpath(os.path.abspath("data/suite/tokenizer.model"),
                                   os.path.abspath(args.seed_dir)), tok)
    params = count_parameters(os.path.join(first, "model.safetensors"))
    out = {
        "model_config": config,
        "parameters": params,
        "tokenizer": {"file": "tokenizer.model", "source": "data/suite/tokenizer.model (the first suite's, reused)"},
        "data": settings.get("data", {}),
        "training": settings.get("training", {}),
        "checkpoints": checkpoints,
    }
    for c in checkpoints:
        c["tokens_per_parameter"] = round(c["tokens_seen"] / params, 4)
    path = os.path.join(args.seed_dir, "checkpoints.json")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    print("%s: %d checkpoints, last step %d (%d tokens, %.2f tokens/parameter), %d parameters"
          % (path, len(checkpoints), checkpoints[-1]["step"], checkpoints[-1]["tokens_seen"],
             checkpoints[-1]["tokens_seen"] / params, params))


if __name__ == "__main__":
    main()
