"""Held-out check of the per-label confidence thresholds against the plain baselines: no
threshold, a fixed 0.5, and one global threshold flagging as many images as the per-label ones.
Trains `lambda-vision train` on PER_TRAIN images per label of a labelled folder (the rest never
seen by training or by the threshold choice), classifies the rest, and prints what each rule flags.

  python3 bench/thresholds_heldout.py demo/dataset 20 SEED   # after `cargo build` (debug binary)
"""
import json, os, random, shutil, subprocess, sys, tempfile
BIN = os.environ.get("LAMBDA_VISION", os.path.join(os.path.dirname(__file__), "..", "target", "debug", "lambda-vision"))
src, per_train, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
root = os.path.join(tempfile.gettempdir(), f"lv-thresholds-{seed}")
shutil.rmtree(root, ignore_errors=True)
rng = random.Random(seed)
held = []
for label in sorted(os.listdir(src)):
    files = sorted(os.listdir(f"{src}/{label}")); rng.shuffle(files)
    os.makedirs(f"{root}/train/{label}")
    for f in files[:per_train]: shutil.copy(f"{src}/{label}/{f}", f"{root}/train/{label}/{f}")
    held += [(label, f"{src}/{label}/{f}") for f in files[per_train:]]
subprocess.run([BIN, "train", "--data", f"{root}/train", "--out", f"{root}/model"], check=True, capture_output=True)
head = json.load(open(f"{root}/model/head.json"))
th = dict(zip(head["labels"], head["thresholds"]["per_label"]))
out = subprocess.run([BIN, "classify", "--model", f"{root}/model", "--top", "1"] + [p for _, p in held], capture_output=True, text=True).stdout
rows = []
for (truth, _), line in zip(held, out.strip().splitlines()):
    top = json.loads(line)["top"][0]
    rows.append((truth, top["label"], top["score"]))
n = len(rows); wrong = [r for r in rows if r[0] != r[1]]
def rule(name, flag):
    flagged = [r for r in rows if flag(r)]
    kept = [r for r in rows if not flag(r)]
    caught = sum(1 for r in flagged if r[0] != r[1])
    acc_kept = sum(1 for r in kept if r[0] == r[1]) / max(1, len(kept))
    print(f"{name:<28} flagged {len(flagged):3d}/{n}  errors caught {caught}/{len(wrong)}  accuracy of the rest {100*acc_kept:.1f} %")
print(f"seed {seed}: train {per_train}/label, held out {n}, accuracy {100*(n-len(wrong))/n:.1f} %")
rule("no threshold", lambda r: False)
rule("fixed 0.5", lambda r: r[2] < 0.5)
rule("per-label (validation F1)", lambda r: r[2] < th[r[1]])
k = sum(1 for r in rows if r[2] < th[r[1]])
cut = sorted(r[2] for r in rows)[k] if k < n else 1.01
rule(f"global, same flag count", lambda r: r[2] < cut)
