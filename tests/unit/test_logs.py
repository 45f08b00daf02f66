"""Structured JSON logs carry namespace/name (LogRecord reserves `name`, hence `fields`)."""

from __future__ import annotations

import json
import logging

from dittoctl.kube.logs import JsonFormatter, TextFormatter, fields


def test_fields_are_unpacked_into_the_json_line() -> None:
    record = logging.LogRecord("dittofs.test", logging.INFO, __file__, 1, "applied %s", ("Service",), None)
    for key, value in fields(namespace="ns", name="demo-api", action="create").items():
        setattr(record, key, value)
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "applied Service"
    assert (entry["namespace"], entry["name"], entry["action"]) == ("ns", "demo-api", "create")
    assert entry["logger"] == "dittofs.test" and entry["level"] == "info"


def test_logging_with_fields_does_not_raise() -> None:
    logging.getLogger("dittofs.test").info("x", extra=fields(name="n", namespace="ns"))


def test_text_lines_name_the_object() -> None:
    record = logging.LogRecord("dittofs.test", logging.INFO, __file__, 1, "applied %s", ("Service",), None)
    for key, value in fields(namespace="apps", name="demo-api", action="create").items():
        setattr(record, key, value)
    line = TextFormatter().format(record)
    assert line.endswith(" INFO dittofs.test applied Service apps/demo-api action=create"), line
