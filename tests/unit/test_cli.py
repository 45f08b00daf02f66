"""`dittoctl` offline commands: crd, render, validate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dittoctl.cli import main
from tests.support.paths import CRD as COMMITTED
from tests.support.paths import SAMPLES

SAMPLE = SAMPLES / "dittoserver-minimal.yaml"


def test_crd_prints_the_committed_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == COMMITTED.read_text()


def test_render_prints_children_without_secret_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(SAMPLE), "-n", "prod"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [("ConfigMap", "demo-config"), ("Service", "demo-headless"), ("Service", "demo-api"),
                     ("Service", "demo-file"), ("StatefulSet", "demo")]
    assert all(d["metadata"]["namespace"] == "prod" for d in docs)
    assert "stringData" not in json.dumps(docs)


def test_validate_accepts_the_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(SAMPLE)]) == 0
    assert "valid" in capsys.readouterr().out


def test_validate_reports_every_error_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = yaml.safe_load(SAMPLE.read_text())
    bad["spec"].update({"replicas": 3, "controlPlane": {"port": 12049}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["validate", "-f", str(path), "-o", "json"]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert result["allowed"] is False
    joined = "\n".join(result["errors"])
    assert "spec.replicas" in joined


def test_validate_without_dittoserver_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert main(["validate", "-f", str(path)]) == 2
