"""The README's example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert int(namespace["A"].sum()) == 20
    assert (tmp_path / "sbl_net" / "manifest.json").is_file()
    assert namespace["state"]["weight"].shape == (1, 20)


def test_readme_shows_the_two_commands_first():
    text = README.read_text()
    first_block = text[text.index("```bash") : text.index("```", text.index("```bash") + 3)]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_network_example_runs(tmp_path, monkeypatch):
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    d, exported = namespace["d"], namespace["exported"]
    accuracy = float((exported(d.X_test).argmax(-1) == d.y_test).float().mean())
    assert accuracy > 0.85
    assert 0.0 <= namespace["ece"] < 0.2
    assert (tmp_path / "digits_net" / "manifest.json").is_file()
