"""What the loss compares the output with, end to end through runtime.train: one-logit
binary classifiers, autoencoders (train.target: input), per-pixel classification
(softmax_cross_entropy spatial, binary masks with bce_with_logits), training on random crops,
train accuracy and the EMA warm-up, and the target checks made before compiling."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from runtime.checkpoint import load_checkpoint
from runtime.train import train
from test_train_loop import cli, factory, make_spec


def _train_file(tmp_path, name: str, text: str, **kw):
    """Write ``text`` to tmp_path/name.yaml and train it into tmp_path/run -> (spec path,
    summary, checkpoint path)."""
    import netspec
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(text)
    return spec, train(netspec.load(spec), tmp_path / "run", progress=False, **kw), \
        str(tmp_path / "run" / "checkpoint.npz")


def _eval_json(capsys, spec, ck, *extra) -> dict:
    """`netspec eval SPEC --checkpoint CK --json [extra]` -> its JSON (exit 0 asserted)."""
    capsys.readouterr()
    assert cli("eval", [str(spec), "--checkpoint", ck, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_one_logit_bce_classifier_metrics_eval_and_predict(tmp_path, capsys):
    """A binary classifier with one logit and bce_with_logits: labels (N,) are its (N, 1)
    targets; validation/test loss is bce on those (never broadcast to (N, N)), accuracy is
    (z > 0) == label (an argmax over one column was always class 0), train accuracy is
    logged from the steps' own outputs, and eval/predict report the two classes."""
    import netspec
    rng = np.random.default_rng(0)
    x = rng.random((240, 1, 4, 4)).astype(np.float32)
    y = (x.mean((1, 2, 3)) > 0.5).astype(np.int64)
    np.savez(tmp_path / "bin.npz", x=x, y=y)
    text = (f"netspec: 1\nname: bin\ninput: [1, 4, 4]\nlayers:\n  - flatten: {{}}\n"
            f"  - linear: {{name: fc, out: 1}}\ntrain:\n  data: {{source: npz, path: {tmp_path / 'bin.npz'}}}\n"
            f"  loss: {{bce_with_logits: {{}}}}\n  optimizer: {{adam: {{lr: 0.05}}}}\n  epochs: 30\n"
            f"  batch_size: 32\n")
    spec, s, ck = _train_file(tmp_path, "bin", text)
    import compiler
    from runtime.train_utils import class_probs, evaluate
    net = compiler.compile(netspec.load(tmp_path / "bin.yaml"), batch_size=32, train=False)
    arrays, _ = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    net.load_params({k[7:]: v for k, v in arrays.items() if k.startswith("params/")})
    z = np.clip(rng.standard_normal((5, 1)) * 3, -20, 20)
    t = np.array([0, 1, 1, 0, 1])
    want = float(np.mean(np.maximum(z[:, 0], 0) - z[:, 0] * t + np.log1p(np.exp(-np.abs(z[:, 0])))))
    assert net.loss_fn(z, t) == pytest.approx(want, rel=1e-12)
    p = class_probs(net, z)
    assert p.shape == (5, 2) and np.allclose(p[:, 1], 1 / (1 + np.exp(-z[:, 0]))) and np.allclose(p.sum(1), 1)
    ev = evaluate(net, x[:64], y[:64])        # raw pixels: preprocessing aside, the rule is what counts
    logits = net.forward(x[:64])[:, 0]
    assert ev["accuracy"] == pytest.approx(np.mean((logits > 0) == y[:64]))
    assert s["test_accuracy"] > 0.85 and s["train_accuracy"] > 0.85, s
    m = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert m[0].split(",")[:4] == ["epoch", "lr", "train_loss", "train_accuracy"]
    r = _eval_json(capsys, spec, ck)
    assert r["accuracy"] == pytest.approx(s["test_accuracy"]) and len(r["confusion_matrix"]) == 2
    np.savez(tmp_path / "few.npz", x=x[:3])
    assert cli("predict", [str(tmp_path / "bin.yaml"), "--checkpoint", ck, str(tmp_path / "few.npz"), "--json",
                           "--top", "5"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert all(len(q["predictions"]) == 2 and q["predictions"][0]["probability"] >= 0.5 for q in preds)


def test_train_accuracy_is_logged_from_the_steps_outputs(tmp_path):
    """train_accuracy in metrics.csv is the running accuracy of the epoch's training steps
    (their train-mode outputs), so early stopping and plateau can watch it."""
    s = train(make_spec(schedule={"plateau": {"metric": "train_accuracy", "patience": 0, "factor": 0.5}},
                        early_stopping={"metric": "train_accuracy", "patience": 3}),
              tmp_path, epochs=2, net_factory=factory, progress=False)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    acc = [float(r.split(",")[head.index("train_accuracy")]) for r in rows[1:]]
    assert all(0.5 < a <= 1 for a in acc) and s["train_accuracy"] == pytest.approx(acc[-1], rel=1e-6)
    lrs = [float(r.split(",")[head.index("lr")]) for r in rows[1:]]
    assert lrs[0] == pytest.approx(0.1) and acc[1] > acc[0] and lrs[1] == pytest.approx(0.1)   # improved: no cut
    assert s["best_epoch"] == 2 and s["best_train_accuracy"] == pytest.approx(acc[1], rel=1e-6)


def test_ema_warmup_follows_tensorflows_num_updates():
    """EMA decay min(decay, (1+t)/(10+t)) at step t: the average forgets the initial weights
    (a constant 0.999 keeps 0.999**t of them); warmup: false is the plain recursion."""
    from runtime.train_utils import EMA
    w0 = np.zeros(3)
    e, plain = EMA(w0, 0.999), EMA(w0, 0.999, warmup=False)
    ref = np.zeros(3)
    for t in range(1, 201):
        w = np.full(3, 1.0)
        e.update(w, t)
        plain.update(w, t)
        d = min(0.999, (1 + t) / (10 + t))
        ref = d * ref + (1 - d) * w
    np.testing.assert_allclose(e.avg, ref, rtol=1e-12)
    assert e.avg[0] > 0.9 and plain.avg[0] == pytest.approx(1 - 0.999 ** 200)


AE = """netspec: 1
name: ae
input: [1, 8, 8]
layers:
  - conv: {name: enc, out: 8, kernel: 3, stride: 2, pad: 1}
  - relu: {}
  - conv_transpose: {name: dec, out: 1, kernel: 3, stride: 2, pad: 1, output_padding: 1}
train:
  target: input
  loss: {mse: {}}
  preprocess: [{rescale: {scale: 0.0625, shift: 0.0}}]
  optimizer: {adam: {lr: 0.01}}
  batch_size: 64
"""


def test_reconstruction_target_trains_an_autoencoder(tmp_path):
    """train.target: input: the loss compares the output with the (preprocessed) input; the
    losses are mse of reconstruction, there is no accuracy (null in summary.json, the CLI line
    shows losses), and settings that need labels or another output shape are refused."""
    import netspec
    s = train(netspec.load(AE), tmp_path, epochs=3, progress=False)
    disk = json.loads((tmp_path / "summary.json").read_text())
    assert disk["test_accuracy"] is None and disk["train_accuracy"] is None
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    vl = [float(r.split(",")[head.index("val_loss")]) for r in rows[1:]]
    assert vl[-1] < vl[0] and s["test_loss"] < 0.1          # pixels in [0, 1]: mse of a fit
    # the test loss is the mse against the test images themselves
    import compiler
    from runtime.train_utils import evaluate
    net = compiler.compile(netspec.load(AE), batch_size=64, train=False)
    a, _ = load_checkpoint(tmp_path / "checkpoint.npz")
    net.load_params({k[7:]: v for k, v in a.items() if k.startswith("params/")})
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    ev = evaluate(net, x, x)
    assert math.isnan(ev["accuracy"]) and ev["loss"] == pytest.approx(float(np.mean((net.forward(x) - x) ** 2)),
                                                                     rel=1e-5)
    for bad, msg in ((AE.replace("loss: {mse: {}}", "loss: {softmax_cross_entropy: {}}"), "needs the mse or"),
                     (AE.replace("output_padding: 1}", "output_padding: 0}"), "output shaped like the input"),
                     (AE + "  early_stopping: {patience: 2}\n", "no accuracy to watch")):
        with pytest.raises(ValueError, match=msg):
            train(netspec.load(bad), tmp_path / "bad", epochs=1, progress=False)


SEG = """netspec: 1
name: seg
input: [1, 8, 8]
layers:
  - conv: {name: c1, out: 8, kernel: 3, pad: 1}
  - relu: {}
  - conv: {name: head, out: 3, kernel: 1}
train:
  data: {source: npz, path: PATH}
  loss: {softmax_cross_entropy: {spatial: true}}
  optimizer: {adam: {lr: 0.03}}
  batch_size: 16
"""


def test_per_pixel_classification_trains_a_segmentation_net(tmp_path):
    """softmax_cross_entropy spatial: masks (N, H, W) in the npz, a random (unstratified)
    split, the loss over every pixel (PyTorch's K-dimensional cross-entropy), pixel accuracy
    in the metrics; augment (it would not move the masks) and a flat output are refused;
    eval-style class probabilities say why they do not apply."""
    import compiler
    import netspec
    rng = np.random.default_rng(0)
    x = rng.random((160, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0] > 1 / 3).astype(np.int64) + (x[:, 0] > 2 / 3)          # 3 classes by intensity
    np.savez(tmp_path / "seg.npz", x=x, y=y)
    text = SEG.replace("PATH", str(tmp_path / "seg.npz"))
    s = train(netspec.load(text), tmp_path / "run", epochs=15, progress=False)
    assert s["test_accuracy"] > 0.9 and s["train_accuracy"] > 0.85, s
    net = compiler.compile(netspec.load(text), batch_size=16, train=True, seed=0)
    z = rng.standard_normal((16, 3, 8, 8)).astype(np.float32)
    t = rng.integers(0, 3, (16, 8, 8))
    zz = z.astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, 3)
    lse = np.log(np.exp(zz).sum(1))
    want = float(np.mean(lse - zz[np.arange(len(zz)), t.reshape(-1)]))
    assert net.loss_fn(z, t) == pytest.approx(want, rel=1e-9)
    loss, _ = net.loss_and_grads(z[:, :1], t)          # the compiled step's loss on a batch
    assert np.isfinite(loss)
    from runtime.train_utils import class_probs
    with pytest.raises(ValueError, match="classifies every"):
        class_probs(net, z)
    with pytest.raises(ValueError, match="does not move|not the per-pixel targets"):
        train(netspec.load(text + "  augment: [{flip: horizontal}]\n"), tmp_path / "a", epochs=1,
              progress=False)
    flat = text.replace("  - conv: {name: head, out: 3, kernel: 1}",
                        "  - flatten: {}\n  - linear: {name: head, out: 3}")
    with pytest.raises(compiler.CompileError, match="spatial: true scores every position"):
        compiler.compile(netspec.load(flat), batch_size=16, train=True)


def test_training_on_random_crops_evaluates_the_centre_crop(tmp_path, capsys):
    """augment random_crop {size}: the net's input is the crop; validation/test (and eval /
    predict on the checkpoint) see the centre window of the full images, so eval reproduces
    the run's test accuracy and predict takes full-size images."""
    text = ("netspec: 1\nname: crop\ninput: [1, 6, 6]\nlayers:\n  - conv: {name: c1, out: 8, kernel: 3, pad: 1}\n"
            "  - relu: {}\n  - global_avgpool: {}\n  - flatten: {}\n  - linear: {name: fc, out: 10}\n"
            "train:\n  augment: [{random_crop: {pad: 0, size: [6, 6]}}, {flip: horizontal}]\n"
            "  optimizer: {adam: {lr: 0.01}}\n")
    spec, s, ck = _train_file(tmp_path, "crop", text, epochs=2)
    assert _eval_json(capsys, spec, ck)["accuracy"] == pytest.approx(s["test_accuracy"])
    from runtime.data import load_dataset
    np.savez(tmp_path / "few.npz", x=load_dataset({"source": "digits"}).x[:2])        # 8x8 images
    assert cli("predict", [str(spec), "--checkpoint", ck, str(tmp_path / "few.npz")]) == 0


def test_targets_are_checked_against_the_loss_before_compiling(tmp_path, capsys):
    """Binary masks with bce_with_logits train (pixel accuracy); labels outside the net's
    classes, multi-class labels for bce, masks without spatial, a 1-class spatial output, a
    bce autoencoder on inputs outside [0, 1] and an accuracy-watching plateau on a
    reconstruction are refused with the fix; segmentation with snapshots completes; eval and
    predict refuse an autoencoder."""
    import netspec
    rng = np.random.default_rng(0)
    x = rng.random((96, 1, 6, 6)).astype(np.float32)
    mask = (x[:, 0] > 0.5).astype(np.int64)
    np.savez(tmp_path / "m.npz", x=x, y=mask)
    np.savez(tmp_path / "l.npz", x=x, y=np.arange(96) % 7)
    head = ("netspec: 1\nname: t\ninput: [1, 6, 6]\nlayers:\n  - conv: {name: c, out: 4, kernel: 3, pad: 1}\n"
            "  - relu: {}\n")

    def spec(last, loss, data, extra=""):
        return netspec.load(head + last + f"train:\n  data: {{source: npz, path: {tmp_path / data}}}\n"
                            f"  loss: {loss}\n  optimizer: {{adam: {{lr: 0.05}}}}\n  batch_size: 16\n" + extra)
    s = train(spec("  - conv: {name: o, out: 1, kernel: 1}\n", "{bce_with_logits: {}}", "m.npz"),
              tmp_path / "bin", epochs=6, progress=False)
    assert s["test_accuracy"] > 0.9 and s["train_accuracy"] > 0.8, s           # per pixel
    flat = "  - flatten: {}\n  - linear: {name: o, out: 5}\n"
    for sp, msg in (
            (spec(flat, "{softmax_cross_entropy: {}}", "l.npz"), "label 6, but the net's output .5,. scores 5 classes"),
            (spec(flat.replace("out: 5", "out: 1"), "{bce_with_logits: {}}", "l.npz"),
             "bce_with_logits needs 0/1 targets"),
            (spec(flat, "{mse: {}}", "l.npz"), r"mse compares every output value .* \(5,\) per image"),
            (spec("  - conv: {name: o, out: 2, kernel: 1}\n", "{softmax_cross_entropy: {}}", "m.npz"),
             "per-pixel classes need .*spatial: true"),
            (spec("  - conv: {name: o, out: 1, kernel: 1}\n", "{softmax_cross_entropy: {spatial: true}}", "m.npz"),
             ">= 2 class channels"),
            (spec("  - conv: {name: o, out: 1, kernel: 1}\n", "{bce_with_logits: {}}", "m.npz", "  target: input\n"),
             r"targets in \[0, 1\], but the preprocessed inputs span"),
            (spec("  - conv: {name: o, out: 1, kernel: 1}\n", "{mse: {}}", "m.npz",
                  "  target: input\n  schedule: {plateau: {metric: val_accuracy}}\n"), "no accuracy to watch")):
        with pytest.raises(ValueError, match=msg):
            train(sp, tmp_path / "bad", epochs=1, progress=False)
    seg = spec("  - conv: {name: o, out: 2, kernel: 1}\n", "{softmax_cross_entropy: {spatial: true}}", "m.npz",
               "  schedule: {sgdr: {t0: 1, t_mult: 1}}\n  snapshot_ensemble: true\n")
    s = train(seg, tmp_path / "seg", epochs=2, progress=False)
    assert s["status"] == "completed" and len(s["snapshots"]) == 2 and "ensemble_test_accuracy" not in s
    ae = tmp_path / "ae.yaml"
    ae.write_text(head + "  - conv: {name: o, out: 1, kernel: 1}\ntrain:\n  target: input\n  loss: {mse: {}}\n")
    for cmd in ("eval", "predict"):
        capsys.readouterr()
        argv = [str(ae), "--checkpoint", str(tmp_path / "seg" / "checkpoint.npz")] + (
            [str(tmp_path / "m.npz")] if cmd == "predict" else [])
        assert cli(cmd, argv) == 1
        assert "reconstruct its input" in capsys.readouterr().err


def test_eval_and_predict_use_the_ema_weights_on_request(tmp_path, capsys):
    """eval --ema / predict --ema score the Polyak/EMA weights the run kept: eval --ema
    reproduces the run's ema_test_accuracy; without ema/arena the message names the fix."""
    import netspec
    text = ("netspec: 1\nname: e\ninput: [1, 8, 8]\nlayers:\n  - flatten: {}\n  - linear: {name: fc, out: 10}\n"
            "train:\n  optimizer: {sgd: {lr: 0.1}}\n  ema: {decay: 0.95}\n")
    spec, s, ck = _train_file(tmp_path, "e", text, epochs=2)
    assert _eval_json(capsys, spec, ck, "--ema")["accuracy"] == pytest.approx(s["ema_test_accuracy"])
    from runtime.data import load_dataset
    np.savez(tmp_path / "few.npz", x=load_dataset({"source": "digits"}).x[:2])
    assert cli("predict", [str(spec), "--checkpoint", ck, "--ema", str(tmp_path / "few.npz")]) == 0
    train(netspec.load(text.replace("  ema: {decay: 0.95}\n", "")), tmp_path / "raw", epochs=1, progress=False)
    capsys.readouterr()
    assert cli("eval", [str(spec), "--checkpoint", str(tmp_path / "raw" / "checkpoint.npz"), "--ema"]) == 1
    assert "no ema/arena (train with `ema:" in capsys.readouterr().err


def test_mask_size_mismatch_is_refused_with_the_upsample_hint(tmp_path):
    """Per-pixel labels whose size differs from the output's (an unpadded conv shrank it):
    refused before compiling, naming both and the `upsample: {from: [x, input]}` fix."""
    import netspec
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "m.npz", x=x, y=(x[:, 0] > 0.5).astype(np.int64))
    text = (f"netspec: 1\nname: s\ninput: [1, 8, 8]\nlayers:\n  - conv: {{name: c, out: 2, kernel: 3}}\n"
            f"train:\n  data: {{source: npz, path: {tmp_path / 'm.npz'}}}\n"
            f"  loss: {{softmax_cross_entropy: {{spatial: true}}}}\n  batch_size: 8\n")
    with pytest.raises(ValueError, match=r"labels are \(8, 8\) per image, but the net's output is \(2, 6, 6\).*"
                                         r"upsample: \{mode: bilinear, from: \[x, input\]\}"):
        train(netspec.load(text), tmp_path / "r", epochs=1, progress=False)


def test_eval_scores_a_segmentation_net_per_pixel(tmp_path, capsys):
    """eval on a softmax_cross_entropy spatial net: pixel accuracy (= the run's test
    accuracy), a per-pixel confusion matrix, IoU per class and their mean; ensembles average
    per-pixel probabilities."""
    rng = np.random.default_rng(0)
    x = rng.random((96, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0] > 1 / 3).astype(np.int64) + (x[:, 0] > 2 / 3)
    np.savez(tmp_path / "seg.npz", x=x, y=y)
    spec, s, ck = _train_file(tmp_path, "seg", SEG.replace("PATH", str(tmp_path / "seg.npz")), epochs=6)
    r = _eval_json(capsys, spec, ck, "--ensemble", ck)
    assert r["accuracy"] == pytest.approx(s["test_accuracy"]) and r["pixels"] == r["n"] * 64
    cm = np.array(r["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == r["pixels"]
    tp = np.diag(cm)
    iou = tp / (cm.sum(0) + cm.sum(1) - tp)
    np.testing.assert_allclose(r["iou"], iou)
    assert r["mean_iou"] == pytest.approx(iou.mean())
    assert cli("eval", [str(spec), "--checkpoint", ck]) == 0
    assert "mean IoU" in capsys.readouterr().out
