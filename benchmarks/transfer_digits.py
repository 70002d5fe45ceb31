"""Does a frozen pretrained feature extractor beat training from scratch on few images?

The experiment (built-in 8x8 digits, CPU, a few minutes on 2 cores):

* **source task**: digits 0-4 only (every 0-4 image of the bundled set, ~900; 10 % val,
  10 % test). The digits net (specs/digits.yaml, fc resized to 5 classes) is pretrained on it
  for 20 epochs -> ``checkpoint.npz``. One pretrain per seed. No image of 5-9 is ever seen.
* **target task**: digits 5-9 (relabelled 0-4) with ``k`` training images per class, drawn
  per seed; the test set is *every other* 5-9 image (~850, so the accuracy is not noisy).
  Three arms, same spec, same data, same augmentation, same epochs, same seed:

  - ``scratch``: fresh initialisation, everything trains;
  - ``frozen``: ``init: {checkpoint, skip: [fc]}`` and ``freeze: true`` on conv1..bn3 --
    only the new 5-way fc trains (BN running statistics still adapt in training mode);
  - ``finetune``: ``init: {checkpoint, skip: [fc]}``, every layer trains.

* Main protocol: k in {2, 5, 10, 20}, 30 epochs, batch 10 (5 at k = 2), the digits
  recipe (SGD+Nesterov, lr 0.05, cosine, 1 warm-up epoch, wd 5e-4, label smoothing 0.05,
  random crop pad 1), seeds 0, 1, 2. Sensitivity (all arms, reported in full): (60 epochs,
  lr 0.2) and (100 epochs, lr 0.5) at k = 10 -- the fc-only arm underfits at lr 0.05.
* Diagnostic: a linear probe fitted to convergence on the frozen features (torch L-BFGS).

Writes ``benchmarks/results/transfer_digits.json`` and ``.md`` (mean +- std of the test
accuracy over seeds per arm). Usage: ``python benchmarks/transfer_digits.py [--quick]
[--work DIR]`` from the repository root (``--quick``: main protocol only).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
FEATURES = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]
ARMS = ("scratch", "frozen", "finetune")
SEEDS = (0, 1, 2)


def base_spec() -> dict:
    """specs/digits.yaml as a plain dict (a trusted file of this repository)."""
    return yaml.safe_load((ROOT / "specs" / "digits.yaml").read_text())


def make_spec(path: Path, data_npz: Path, *, classes: int, epochs: int, batch: int, seed: int,
              lr: float | None = None, val_split: float = 0.0, init: Path | None = None,
              freeze: tuple[str, ...] = ()) -> Path:
    """Write a variant of the digits spec to ``path`` and return it."""
    d = base_spec()
    d["name"] = path.stem
    for L in d["layers"]:
        (kind, attrs), = L.items()
        if attrs.get("name") == "fc":
            attrs["out"] = classes
        if attrs.get("name") in freeze:
            attrs["freeze"] = True
    t = d["train"]
    t["data"] = {"source": "npz", "path": str(data_npz), "val_split": val_split,
                 "test_split": 0.1, "seed": seed}
    t.update(epochs=epochs, batch_size=batch, seed=seed)
    if lr is not None:
        t["optimizer"]["sgd"]["lr"] = lr
    if init is not None:
        d["init"] = {"checkpoint": str(init), "skip": ["fc"]}
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def write_npz(path: Path, x, y, names, x_test=None, y_test=None) -> Path:
    arrays = dict(x=x.astype(np.float32), y=y.astype(np.int64), class_names=np.array(names))
    if x_test is not None:
        arrays.update(x_test=x_test.astype(np.float32), y_test=y_test.astype(np.int64))
    np.savez_compressed(path, **arrays)
    return path


def _train(spec_path: Path, out: Path) -> dict:
    import netspec
    from runtime.train import train
    s = train(netspec.load(spec_path), out, progress=False)
    return {"test_accuracy": float(s["test_accuracy"]), "train_loss": float(s["train_loss"]),
            "seconds": float(s["seconds"])}


def pretrain(work: Path, seed: int, epochs: int = 20) -> tuple[Path, dict]:
    from runtime.data import load_digits
    ds = load_digits()
    src = ds.y < 5
    npz = write_npz(work / "source_0to4.npz", ds.x[src], ds.y[src], [str(i) for i in range(5)])
    spec = make_spec(work / f"pretrain_s{seed}.yaml", npz, classes=5, epochs=epochs, batch=64,
                     seed=seed, val_split=0.1)
    r = _train(spec, work / f"pretrain_s{seed}")
    return work / f"pretrain_s{seed}" / "checkpoint.npz", r


def target_data(work: Path, k: int, seed: int) -> Path:
    """k images per class of 5-9 for training (drawn with ``seed``), every other 5-9 image
    for testing; labels 5-9 -> 0-4."""
    from runtime.data import load_digits
    ds = load_digits()
    rng = np.random.default_rng(1000 + seed)
    tr = np.concatenate([rng.choice(np.flatnonzero(ds.y == c), k, replace=False) for c in range(5, 10)])
    te = np.setdiff1d(np.flatnonzero(ds.y >= 5), tr)
    return write_npz(work / f"target_k{k}_s{seed}.npz", ds.x[tr], ds.y[tr] - 5,
                     [str(i) for i in range(5, 10)], ds.x[te], ds.y[te] - 5)


def run_setting(work: Path, ckpts: dict, *, k: int, epochs: int, lr: float | None) -> dict:
    """One (k, epochs, lr) setting: every arm x every seed -> per-seed accuracies + mean/std."""
    batch = 5 if k <= 2 else 10          # >= 2 steps per epoch even at k = 2
    tag = f"k{k}_e{epochs}_lr{str(lr).replace('.', 'p') if lr is not None else 'def'}"
    acc = {a: [] for a in ARMS}
    loss = {a: [] for a in ARMS}
    for seed in SEEDS:
        npz = target_data(work, k, seed)
        for arm in ARMS:
            spec = make_spec(work / f"{arm}_{tag}_s{seed}.yaml", npz, classes=5, epochs=epochs,
                             batch=batch, seed=seed, lr=lr,
                             init=None if arm == "scratch" else ckpts[seed],
                             freeze=tuple(FEATURES) if arm == "frozen" else ())
            r = _train(spec, work / f"{arm}_{tag}_s{seed}")
            acc[arm].append(r["test_accuracy"])
            loss[arm].append(r["train_loss"])
            print(f"  {tag} seed {seed} {arm:8s} test acc {r['test_accuracy']:.4f}", flush=True)
    from runtime.data import load_digits
    n_test = int((load_digits().y >= 5).sum()) - 5 * k
    return {"k": k, "epochs": epochs, "lr": lr if lr is not None else 0.05, "batch_size": batch,
            "test_images": n_test, "per_seed": acc,
            "final_train_loss": {a: float(np.mean(v)) for a, v in loss.items()},
            "mean": {a: float(np.mean(v)) for a, v in acc.items()},
            "std": {a: float(np.std(v)) for a, v in acc.items()}}


def linear_probe(work: Path, ckpts: dict, k: int = 10) -> dict:
    """Diagnostic: how good are the frozen features at all?  Eval-mode features of the
    pretrained net at ``avgpool`` (what the frozen arm's fc sees, 64) and ``bn3`` (before the
    pooling, 64x4x4) for the k-shot train / test images, then an L2-regularised softmax
    regression fitted to convergence (torch L-BFGS, float64) -> test accuracy per seed."""
    import netspec
    import torch
    from runtime.checkpoint import load_checkpoint
    from runtime.transfer import extract_features
    out = {"avgpool": [], "bn3": []}
    for seed in SEEDS:
        z = np.load(target_data(work, k, seed))
        x, y, xt, yt = z["x"], z["y"], z["x_test"], z["y_test"]
        m, sd = x.mean(), x.std()                   # the arms' standardize: per channel, train
        spec = netspec.load(make_spec(work / f"probe_s{seed}.yaml", work / f"target_k{k}_s{seed}.npz",
                                      classes=5, epochs=1, batch=10, seed=seed))
        w = load_checkpoint(ckpts[seed])[0]
        for layer in out:
            f = extract_features(spec, w, layer, (x - m) / sd).reshape(len(x), -1)
            ft = extract_features(spec, w, layer, (xt - m) / sd).reshape(len(xt), -1)
            mu, s = f.mean(0), f.std(0) + 1e-6
            A = torch.tensor((f - mu) / s, dtype=torch.float64)
            B = torch.tensor((ft - mu) / s, dtype=torch.float64)
            W = torch.zeros(A.shape[1], 5, dtype=torch.float64, requires_grad=True)
            b = torch.zeros(5, dtype=torch.float64, requires_grad=True)
            opt = torch.optim.LBFGS([W, b], max_iter=500)
            yy = torch.tensor(y)

            def closure():
                opt.zero_grad()
                lo = torch.nn.functional.cross_entropy(A @ W + b, yy) + 1e-3 * (W ** 2).sum()
                lo.backward()
                return lo
            opt.step(closure)
            out[layer].append(float(((B @ W + b).argmax(1).numpy() == yt).mean()))
    return {"k": k, "per_seed": out, "mean": {l: float(np.mean(v)) for l, v in out.items()},
            "std": {l: float(np.std(v)) for l, v in out.items()}}


def _md(res: dict) -> str:
    lines = ["# Transfer on the built-in digits: frozen pretrained features vs scratch", "",
             "Pretrain: digits net on digits 0-4 only (20 epochs, one pretrain per seed); "
             f"source test accuracy {res['pretrain_mean']:.4f} (mean over seeds).",
             "Target: digits 5-9 (never seen in pretraining) with k training images per class; "
             "test = every other 5-9 image (896 - 5k images). Seeds "
             f"{list(SEEDS)} (seed = init, order, augmentation *and* which k images). "
             "Arms: **scratch** (fresh init); **frozen** (`init: {checkpoint, skip: [fc]}`, "
             "`freeze: true` on conv1..bn3, only fc trains); **fine-tune** (same init, all "
             "layers train). Same spec, data, augmentation, epochs and seed in every arm. "
             "Test accuracy, mean +- std (population) over the 3 seeds.", "",
             "| k/class | epochs | lr | scratch | frozen features (fc only) | fine-tune all |",
             "|---|---|---|---|---|---|"]
    for s in res["settings"]:
        m, d = s["mean"], s["std"]
        cell = lambda a: f"{m[a]:.3f} +- {d[a]:.3f}"  # noqa: E731
        tag = " (main)" if s.get("main") else " (sensitivity)"
        lines.append(f"| {s['k']} | {s['epochs']}{tag} | {s['lr']} | {cell('scratch')} | "
                     f"{cell('frozen')} | {cell('finetune')} |")
    p = res.get("probe")
    if p:
        lines += ["", f"Linear probe (diagnostic, k={p['k']}): softmax regression fitted to "
                  "convergence on the frozen pretrained features: "
                  f"avgpool (64-d, what the frozen arm's fc sees) {p['mean']['avgpool']:.3f} +- "
                  f"{p['std']['avgpool']:.3f}; bn3 (64x4x4, before pooling) "
                  f"{p['mean']['bn3']:.3f} +- {p['std']['bn3']:.3f}."]
    lines += ["", res["verdict"], "", "## Reading it", "",
              "* The bar \"frozen features beat scratch at equal epochs\" is **not met** on the "
              "digits: scratch trains this 29k-parameter net well from 10-100 images of an easy "
              "5-way task, while the 0-4 features are specialised to a 5-class task solved to "
              "100 %.",
              "* Two causes, separated by the diagnostics: (1) the fc-only arm underfits at the "
              "digits recipe's lr 0.05 / 30 epochs (final train loss 0.74-0.97 vs ~0.26 for scratch; "
              "lr 0.5 / 100 epochs reaches the converged linear probe's ~0.85); (2) global "
              "average pooling of the frozen 4x4 maps loses what the 5-9 task needs: a probe on "
              "bn3 before pooling reaches scratch's accuracy, the pooled 64-d features ~0.85.",
              "* Fine-tuning every layer from the checkpoint is on par with scratch (within one "
              "std), never clearly better.",
              "* Pilot, ad hoc, not regenerated by this script: source = the standard digits run "
              "(all 10 classes, 20 epochs), target = the held-out val+test images rotated by 90 "
              "degrees, 10 classes, 30 epochs: k=10 scratch 0.911 +- 0.010, frozen (fc only) "
              "0.654 +- 0.007, frozen up to bn2 0.883 +- 0.024, fine-tune 0.916 +- 0.018 -- the "
              "same picture.",
              "",
              f"Machine: {res['machine']}; total {res['seconds']:.0f} s. "
              "Regenerate: `python benchmarks/transfer_digits.py`."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="main protocol at k = 10 only")
    ap.add_argument("--work", default=None, help="keep the runs here (default: a temp dir)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="transfer_digits_") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ckpts, pre = {}, []
        for seed in SEEDS:
            ckpts[seed], r = pretrain(work, seed)
            pre.append(r["test_accuracy"])
            print(f"pretrain 0-4 seed {seed}: test acc {r['test_accuracy']:.4f}", flush=True)
        settings = []
        for k in ((10,) if args.quick else (2, 5, 10, 20)):
            s = run_setting(work, ckpts, k=k, epochs=30, lr=None)
            s["main"] = True
            settings.append(s)
        probe = None
        if not args.quick:
            for epochs, lr in ((60, 0.2), (100, 0.5)):
                settings.append(run_setting(work, ckpts, k=10, epochs=epochs, lr=lr))
            probe = linear_probe(work, ckpts)
    main_rows = [s for s in settings if s.get("main")]
    wins = [s["mean"]["frozen"] > s["mean"]["scratch"] for s in settings]
    verdict = (f"Frozen features beat scratch in {sum(wins)} of {len(settings)} settings "
               "(main protocol, frozen vs scratch: " + ", ".join(
                   f"k={s['k']}: {s['mean']['frozen']:.3f} vs {s['mean']['scratch']:.3f}"
                   for s in main_rows) + ").")
    res = {"experiment": "transfer_digits", "seeds": list(SEEDS), "pretrain_epochs": 20,
           "pretrain_test_accuracy": pre, "pretrain_mean": float(np.mean(pre)),
           "settings": settings, "probe": probe, "verdict": verdict,
           "frozen_beats_scratch_main": all(s["mean"]["frozen"] > s["mean"]["scratch"]
                                            for s in main_rows),
           "machine": f"{platform.machine()} {platform.system()}, python {platform.python_version()}",
           "seconds": time.perf_counter() - t0}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transfer_digits.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "transfer_digits.md").write_text(_md(res))
    print(verdict)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
