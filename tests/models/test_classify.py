"""Private image classification (ViT): pcformer.classify and `pcformer run --image`."""
import json
import subprocess
import sys

import numpy as np
import pytest

import pcformer
from pcformer import models
from pcformer.classify import load_image, private_classification
from pcformer.inference import InputError


@pytest.fixture(scope="module")
def vit_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("vit")
    folder = models.make_tiny_vit(d / "cls", num_labels=3, num_hidden_layers=1)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = {"0": "cat", "1": "dog", "2": "fox"}
    cfg["label2id"] = {"cat": 0, "dog": 1, "fox": 2}
    (folder / "config.json").write_text(json.dumps(cfg))
    image = np.random.default_rng(1).normal(size=(3, 16, 16)).astype(np.float32)
    np.save(d / "img.npy", image)
    return folder, d / "img.npy"


@pytest.mark.slow
def test_private_classification_matches_the_exact_model(vit_folder):
    folder, image = vit_folder
    model = models.load(folder)
    job = private_classification(model, load_image(image, model), policy="exact",
                                 config=pcformer.MPCConfig(seed=2))
    assert job.private.shape == (1, 3)
    assert job.fidelity["vs_exact"]["max_abs"] < 5e-3      # fixed point, 16 fraction bits
    assert job.fidelity["top1_agrees_with_exact"]
    assert job.label() == job.labels[int(np.argmax(job.exact))]
    assert set(job.labels) == {"cat", "dog", "fox"}
    assert job.report.totals() == job.static_report.totals()   # static cost == measured
    assert job.seq_len == (16 // 4) ** 2 + 1


def test_bad_images_are_refused_with_the_reason(vit_folder, tmp_path):
    folder, _ = vit_folder
    model = models.load(folder)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 8, 8), np.float32))
    np.save(tmp_path / "nan.npy", np.full((3, 16, 16), np.nan, np.float32))
    (tmp_path / "pic.png").write_bytes(b"\x89PNG")
    for path, needle in ((tmp_path / "wrong.npy", "[3, 16, 16]"), (tmp_path / "nan.npy", "NaN"),
                         (tmp_path / "pic.png", ".npy file"), (tmp_path / "none.npy", "no such file")):
        with pytest.raises(InputError, match=needle.replace("[", r"\[").replace(".", r"\.")):
            load_image(path, model)
    headless = models.load(models.make_tiny_vit(tmp_path / "headless"))
    with pytest.raises(InputError, match="ViTForImageClassification"):
        private_classification(headless, np.zeros((1, 3, 16, 16), np.float32))


def pcformer_cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "pcformer", *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("extra, needle", [([], "--image=FILE.npy"),
                                           (["--text=hello"], "--text is for text models"),
                                           (["--image={d}/missing.npy"], "no such file")])
@pytest.mark.slow
def test_run_refuses_bad_vit_input_in_one_line(vit_folder, extra, needle):
    folder, image = vit_folder
    res = pcformer_cli("run", f"--model={folder}", *[e.format(d=image.parent) for e in extra],
                       timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stdout == ""
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr


@pytest.mark.slow
def test_run_classifies_an_image_privately(vit_folder, tmp_path):
    folder, image = vit_folder
    res = pcformer_cli("run", f"--model={folder}", f"--image={image}", "--policy=exact",
                       f"--report={tmp_path}/r.json")
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["static_equals_measured"] is True
    assert rep["classification"]["label"] == rep["classification"]["exact_label"]
    assert rep["classification"]["label"] in {"cat", "dog", "fox"}
    assert f"Private class (revealed to the client): {rep['classification']['label']}" in res.stdout
