"""run() / load() / Results: the same results.json and tables as the CLI."""

import json

import numpy as np
import pytest

import anoseg_bench as ab
from test_evaluator import write_dataset


@pytest.fixture
def sweep(tmp_path, bench, monkeypatch):
    write_dataset(tmp_path / "d", c=7, h=16, w=20)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'name = "t"\ndataset = "d"\noutput = "out"\nmethods = ["max_logit", "energy"]\n'
        '[[models]]\nid = "m"\nname = "M"\n'
    )
    bench("run", cfg, "--device", "cpu", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path, cfg


def test_load_and_tables_equal_cli(sweep, bench):
    root, _ = sweep
    r = ab.load(root / "out" / "t")
    assert isinstance(r, ab.Results) and r.name == "t"
    assert r.json == (root / "out" / "t" / "results.json").read_text()
    for fmt in ("md", "latex", "csv", "html"):
        assert r.table(fmt) == bench("table", root / "out" / "t", "--format", fmt)
    with pytest.raises(ValueError, match=r'unknown table format "pdf" \(md, csv, latex, html\)'):
        r.table("pdf")
    cells, honest = r.cells, r.honest
    rows = json.loads(r.json)["cells"]
    try:
        import pandas as pd
    except ImportError:
        assert cells == rows and isinstance(honest, list)
    else:
        assert isinstance(cells, pd.DataFrame) and len(cells) == len(rows) == 4
        assert list(cells["method"]) == [c["method"] for c in rows]
        assert isinstance(honest, pd.DataFrame) and len(honest) == 2
    assert r.cell("m", "energy", "test")["auroc"] == next(
        c["auroc"] for c in rows if c["method"] == "energy" and c["split"] == "test"
    )
    with pytest.raises(KeyError):
        r.cell("m", "msp")


def same_folders(a, b):
    """Every file of two results folders equal byte for byte, but manifest.json (timings)."""
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb
    for f in fa:
        if f.name != "manifest.json":
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    return len(fa)


def test_run_in_process_equals_cli(sweep):
    root, cfg = sweep
    cfg2 = root / "c2.toml"
    cfg2.write_text(cfg.read_text().replace('output = "out"', 'output = "out2"'))
    r = ab.run(cfg2, device="cpu")
    assert r.json == (root / "out" / "t" / "results.json").read_text()
    assert same_folders(root / "out" / "t", root / "out2" / "t") > 5
    assert ab.run(cfg, device="cpu", write=False).json == r.json


def test_datasets_sweep_returns_a_dict(tmp_path, bench, monkeypatch):
    write_dataset(tmp_path / "a", c=5, h=8, w=10, seed=1)
    write_dataset(tmp_path / "b", c=5, h=8, w=10, seed=2)
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        'name = "multi"\noutput = "out"\nmethods = ["msp"]\n'
        '[[datasets]]\nname = "a"\npath = "a"\n[[datasets]]\nname = "b"\npath = "b"\n'
        '[[models]]\nid = "m"\nname = "M"\n'
    )
    bench("run", cfg, "--device", "cpu", cwd=tmp_path)
    monkeypatch.chdir(tmp_path)
    loaded = ab.load("out/multi")
    cfg2 = tmp_path / "c2.toml"
    cfg2.write_text(cfg.read_text().replace('output = "out"', 'output = "out2"'))
    ran = ab.run(cfg2, device="cpu")
    same_folders(tmp_path / "out" / "multi", tmp_path / "out2" / "multi")
    assert sorted(loaded) == sorted(ran) == ["a", "b"]
    for k in loaded:
        assert loaded[k].json == ran[k].json and loaded[k].dataset == k
