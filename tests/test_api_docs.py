"""docs/api.md's examples run as written, in order, against the bundled model."""

import json
import os
import re

from ttscale.demo.task import DemoTask

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_the_api_page_runs(tmp_path, monkeypatch, capsys):
    text = open(os.path.join(ROOT, "docs", "api.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    (tmp_path / "problems.jsonl").write_text("".join(json.dumps({"id": str(i), "prompt": p.prompt, "answer": p.answer})
                                                     + "\n" for i, p in enumerate(DemoTask().load(2))))
    namespace = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    assert namespace["summary"]["problems"] == 5 and (tmp_path / "runs" / "api" / "records.jsonl").is_file()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("demo-shift/test/0 ")
