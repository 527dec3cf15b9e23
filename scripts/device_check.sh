#!/usr/bin/env bash
# GPU check of the accelerator path (docs/performance.md, "GPU"): on a machine with CUDA,
#   1. prints the card and writes it to card.json,
#   2. runs every benchmark on the card: python -m upt_lightning.bench all --device cuda,
#   3. trains `+experiment=burgers_upt model=base trainer=gpu` (bf16-mixed) for a fixed number of steps
#      per stage and writes its results.json (samples per second, peak memory of the card).
# Everything lands in OUT_DIR/<timestamp>/ (default device_check/), so a second run never overwrites the
# first; the data file is generated once into data/ and reused. Each part has its own time limit and a
# failure is recorded in summary.json without stopping the other parts: the whole script stays under
# 8 minutes of device time.
#
#   bash scripts/device_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."

if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "device_check: no CUDA device is visible to torch; run it on a GPU machine" >&2
    exit 2
fi
OUT="${1:-device_check}/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
STEPS="${DEVICE_CHECK_STEPS:-200}"   # training steps per stage

python - "$OUT/card.json" <<'EOF'
import json, sys, torch
props = torch.cuda.get_device_properties(0)
card = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
        "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda,
        "bf16": torch.cuda.is_bf16_supported(), "devices": torch.cuda.device_count()}
print("card:", json.dumps(card))
json.dump(card, open(sys.argv[1], "w"), indent=2)
EOF

status_bench=0
timeout 300 python -m upt_lightning.bench all --device cuda --out "$OUT/bench" || status_bench=$?

status_train=0
timeout 150 python train.py +experiment=burgers_upt model=base trainer=gpu data_dir=data \
    cache_dir="$OUT/stage1_cache" hydra.run.dir="$OUT/train" \
    stage1.max_epochs=1 stage2.max_epochs=1 stage1.limit_train_batches="$STEPS" \
    stage2.limit_train_batches="$STEPS" data.num_workers=auto evaluate.superres=false evaluate.plots=false \
    || status_train=$?

python - "$OUT" "$status_bench" "$status_train" <<'EOF'
import json, pathlib, sys
out, bench_rc, train_rc = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
summary = {"card": json.loads((out / "card.json").read_text()), "bench_exit": bench_rc, "train_exit": train_rc}
results = out / "train" / "results.json"
if results.is_file():
    data = json.loads(results.read_text())
    summary["train"] = {k: data.get(k) for k in ("phase_times_s", "device", "throughput")}
for path in sorted((out / "bench").glob("*.json")):
    summary.setdefault("bench", {})[path.stem] = json.loads(path.read_text()).get("summary")
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(f"device_check: {out}/summary.json (bench exit {bench_rc}, train exit {train_rc})")
EOF
