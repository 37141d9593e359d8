"""The README's quick start runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python block"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # the block is our own documentation
    assert namespace["cv"].results.cv.shape == (25_000, 2)
    assert (tmp_path / "ala2_cv.pt").exists() and (tmp_path / "ala2_cv.ts").exists()
    assert namespace["new"].sizes["frame"] == 1000
