"""The README's example must stay true: it runs and reaches what its comment says."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_mlp_example_trains(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    out = capsys.readouterr().out
    acc = float(re.search(r"accuracy ([0-9.]+)", out).group(1))
    assert acc >= 0.95, out


def test_readme_starts_with_the_two_commands():
    text = README.read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == [
        "bash scripts/train.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (README.parent / ".ci" / "run").read_text()
