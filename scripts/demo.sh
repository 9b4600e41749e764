#!/usr/bin/env bash
# `make demo`: the whole fedimg pipeline on an embedded default, on this machine.
#   synthesise → deface → train one site → evaluate on another → study (federated on NVFlare
#   SimEnv vs centralised vs each site alone; train/val/test split, early stopping, seeds,
#   95 % intervals) → report, then the pathology track:
#   tile the bundled real H&E slide → synthetic stain-shifted sites → Macenko → train one
#   site's tile classifier → federate the tile classifier
# Usage: scripts/demo.sh [OUT_DIR]   (default: demo/). Tunables via environment:
#   DEMO_SITES, DEMO_CASES (one number or one per site, e.g. 6,8,10), DEMO_SPACING (mm),
#   DEMO_EPOCHS, DEMO_ROUNDS (most rounds), DEMO_LOCAL_EPOCHS, DEMO_PATIENCE, DEMO_SEEDS,
#   DEMO_TILE_ROUNDS, DEMO_CONTRAST_AUG (on|off: the study's contrast augmentation at every site),
#   DEMO_STRATEGY (the study's federated strategy; default fedavgm, the study's default)
# The defaults keep the whole demo on a 2-core CPU well under 15 minutes (4 mm voxels);
# `fedimg synth` itself defaults to 2 mm.
set -euo pipefail
OUT=${1:-demo}
FEDIMG=${FEDIMG:-.venv/bin/fedimg}
SITES=${DEMO_SITES:-3}
CASES=${DEMO_CASES:-6,8,10}
SPACING=${DEMO_SPACING:-4}
EPOCHS=${DEMO_EPOCHS:-30}
ROUNDS=${DEMO_ROUNDS:-8}
LOCAL_EPOCHS=${DEMO_LOCAL_EPOCHS:-4}
PATIENCE=${DEMO_PATIENCE:-2}
SEEDS=${DEMO_SEEDS:-3}
TILE_ROUNDS=${DEMO_TILE_ROUNDS:-5}
CONTRAST_AUG=${DEMO_CONTRAST_AUG:-on}
STRATEGY=${DEMO_STRATEGY:-fedavgm}
SMALL=(--roi 32 32 32 --batch-size 2 --init-filters 8)
PATHO=tests/assets/pathology
mkdir -p "$OUT"
step() { printf '\n==> %s\n' "$*"; }
t0=$SECONDS

step "1/7 synthesise $SITES non-IID sites of $CASES cases from the head template, own contrast mappings (BraTS 2021 layout, faces still in)"
"$FEDIMG" synth --out "$OUT/raw" --sites "$SITES" --cases-per-site "$CASES" --spacing "$SPACING" --seed 0 --hard

step "2/7 deface every case (t1 registered, same removal applied to t1ce/t2/flair, tumour protected)"
mkdir -p "$OUT/data"
for s in $(seq 1 "$SITES"); do
  "$FEDIMG" deface "$OUT/raw/site-$s" -o "$OUT/data/site-$s" --layout brats --no-png
done

step "3/7 train site-1 alone for $EPOCHS epochs (defaced data only: no --allow-identifiable)"
"$FEDIMG" train --data "$OUT/data/site-1" --out "$OUT/runs/site-1" --epochs "$EPOCHS" "${SMALL[@]}" --no-progress

step "4/7 evaluate the site-1 model on site-2's cases"
"$FEDIMG" evaluate --model "$OUT/runs/site-1" --data "$OUT/data/site-2"

step "5/7 study, $SEEDS seeds: federated (NVFlare SimEnv, $STRATEGY) vs centralised vs each site alone, early stopping, contrast augmentation $CONTRAST_AUG"
"$FEDIMG" study --data "$OUT/data" --out "$OUT/study" --seeds "$SEEDS" --rounds "$ROUNDS" \
  --local-epochs "$LOCAL_EPOCHS" --patience "$PATIENCE" --strategy "$STRATEGY" --contrast-aug "$CONTRAST_AUG" "${SMALL[@]}" --no-progress

step "6/7 pathology: tile the real H&E slide, make $SITES stain-shifted synthetic sites, Macenko-normalise one"
"$FEDIMG" tiles --slide "$PATHO/cmu_small_region.svs" --out "$OUT/pathology/slide-tiles" --tile-size 224 --mpp 0.5 --no-progress
"$FEDIMG" tiles --synthetic-sites "$SITES" --out "$OUT/pathology/sites" --seed 0 --no-progress
"$FEDIMG" stain-normalize --input "$OUT/pathology/sites/site-2" --target "$PATHO/tiatoolbox_target_image.png" \
  --out "$OUT/pathology/site-2-macenko" --no-progress

step "7/7 pathology: train site-1's tile classifier alone, then federate all sites for $TILE_ROUNDS rounds"
TILE_CFG=(--model resnet10 --width 0.5 --batch-size 32 --lr 0.003)
"$FEDIMG" train-tiles --data "$OUT/pathology/sites/site-1" --out "$OUT/runs/tiles-site-1" --epochs 10 "${TILE_CFG[@]}" --no-progress
printf '{"model": "resnet10", "width": 0.5, "batch_size": 32, "lr": 0.003, "warmup_epochs": 0}\n' >"$OUT/pathology/tiles-config.json"
"$FEDIMG" simulate --task tiles --data "$OUT/pathology/sites" --out "$OUT/runs/tiles-fl" --rounds "$TILE_ROUNDS" \
  --local-epochs 2 --config "$OUT/pathology/tiles-config.json" --no-progress

printf '\nDemo finished in %d s.\n  report: %s\n  federated run: %s\n' \
  $((SECONDS - t0)) "$OUT/study/report.md" "$OUT/study/seed-0/fl-$STRATEGY/metrics.json"
printf '  tiles: %s (thumbnail.png), federated tile classifier: %s\n' "$OUT/pathology/slide-tiles" "$OUT/runs/tiles-fl/metrics.json"
